/* the emulator's stand-in for src/cuda/cuda_common.cuh (tests/cuda_emu/run.sh): host memory, no-op
 * error checks, stream-ordered allocation as malloc/free */
#pragma once
#include "emu.h"
extern "C" {
#include "common.h"
#include "ops.h"
}
typedef __nv_bfloat16 bf16;
typedef int cudaError_t;
typedef void *cudaStream_t;
#define cudaSuccess 0
#define CU_CHECK(call) ((void)(call))
#define CU_LAUNCHED() ((void)0)
extern cudaStream_t pg_cu_stream;
static inline unsigned pg_cu_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 16u ? 65535u * 16u : b);
}
static inline int cudaMallocAsync(void **p, size_t n, cudaStream_t) { *p = malloc(n); memset(*p, 0xff, n); return 0; }
static inline int cudaFreeAsync(void *p, cudaStream_t) { free(p); return 0; }
#define cudaFuncAttributeMaxDynamicSharedMemorySize 0
template <class K> static inline int cudaFuncSetAttribute(K *, int, int bytes) {
    if (bytes > 227 * 1024) { fprintf(stderr, "smem %d > 227 KB\n", bytes); abort(); }
    return 0;
}
void cu_smear_fwd(pg_act *y, const pg_act *x, const float *gate, int N, int T, int C, int reverse);
void cu_smear_bwd(pg_act *dx, float *dgate, const pg_act *dy, const pg_act *x, const float *gate, int N, int T, int C,
                  int reverse);
void cu_xsa_fwd(pg_act *y, const pg_act *o, const pg_act *v, int N, int H, int Hk, int D);
void cu_xsa_bwd(pg_act *do_, pg_act *dv, const pg_act *dy, const pg_act *o, const pg_act *v, int N, int H, int Hk,
                int D);
void cu_leaky_relu2_fwd(pg_act *u, const pg_act *h, size_t n, float slope);
void cu_leaky_relu2_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n, float slope);
void cu_lerp_fwd(pg_act *out, const pg_act *x, const pg_act *y, const float *r, int N, int C);
void cu_lerp_bwd(pg_act *dx, pg_act *dy, float *dr, const pg_act *dout, const pg_act *x, const pg_act *y,
                 const float *r, int N, int C);
void cu_gelu_fwd(pg_act *u, const pg_act *h, size_t n);
void cu_gelu_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n);
void cu_lane_route_fwd(pg_act *y, const pg_act *x, const pg_act *a, const float *sa, const float *ra, const pg_act *m,
                       const float *sm, const float *rm, int N, int C);
void cu_lane_route_bwd(pg_act *da, pg_act *dm, float *dsa, float *dsm, float *dra, float *drm, const pg_act *dy,
                       const pg_act *a, const float *sa, const float *ra, const pg_act *m, const float *sm,
                       const float *rm, int N, int C, int accumulate);
void cu_fake_quant_rows(pg_wc *dst, const float *W, int rows, int cols, int mode, int low);
void cu_attn_fwd(pg_act *o, float *lse, const pg_act *q, const pg_act *k, const pg_act *v, int B, int T, int H, int Hk,
                 int D);
void cu_attn_bwd(pg_act *dq, pg_act *dk, pg_act *dv, const pg_act *dout, const pg_act *q, const pg_act *k,
                 const pg_act *v, const pg_act *o, const float *lse, int B, int T, int H, int Hk, int D);
