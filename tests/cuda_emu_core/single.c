/* tests/cuda_emu_core/single.c: single-process stand-ins of dist.c and backend.c for the emulated whole-model test (run.sh, CUDA_EMU_MODEL=1) */
#include <string.h>
#include "dist.h"
#include "backend.h"
#include "common.h"
void dist_init(void) {}
int dist_rank(void) { return 0; }
int dist_world(void) { return 1; }
int dist_local_rank(void) { return 0; }
void dist_finalize(void) {}
void dist_check_config(pg_config *c) { (void)c; }
void dist_sum_f64(double *x, int n) { (void)x, (void)n; }
void dist_max_f64(double *x, int n) { (void)x, (void)n; }
void dist_bcast_host(void *p, size_t b, int r) { (void)p, (void)b, (void)r; }
void dist_allreduce_sum(const pg_ops *o, float *x, size_t n) { (void)o, (void)x, (void)n; }
void dist_bcast_many(const pg_ops *o, float *const *p, const size_t *n, const int *r, int c) { (void)o, (void)p, (void)n, (void)r, (void)c; }
const pg_ops *backend_select(const char *name) { return !strcmp(name, "cuda") ? &pg_cuda_ops : &pg_cpu_ops; }
