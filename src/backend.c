/* backend.c: backend selection (see backend.h). "auto" picks CUDA when this binary was built with
 * it and a GPU answers, else the CPU. */
#include "backend.h"

#include <string.h>

#include "common.h"

const pg_ops *backend_select(const char *name) {
    if (!strcmp(name, "cpu")) return &pg_cpu_ops;
#ifdef PGOLF_CUDA
    char why[256] = "";
    int ok = pg_cuda_available(why, sizeof(why));
    if (!strcmp(name, "cuda")) {
        if (!ok) pg_die("PGOLF_BACKEND=cuda: %s", why);
        return &pg_cuda_ops;
    }
    return ok ? &pg_cuda_ops : &pg_cpu_ops;
#else
    if (!strcmp(name, "cuda")) pg_die("PGOLF_BACKEND=cuda: this pgolf was built without CUDA (nvcc not found at build time)");
    return &pg_cpu_ops;
#endif
}
