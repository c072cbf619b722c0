/* backend.h: choosing the ops table (ops.h) from PGOLF_BACKEND: cpu, cuda, or auto. */
#ifndef PGOLF_BACKEND_H
#define PGOLF_BACKEND_H

#include "ops.h"

/* Dies with one error line if the requested backend is unavailable. */
const pg_ops *backend_select(const char *name);

#endif
