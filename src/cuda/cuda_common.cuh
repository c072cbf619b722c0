/* cuda_common.cuh: what the CUDA backend's files share. Activations and compute weights are bf16
 * (__nv_bfloat16); masters, gradients, optimizer state, rstd and losses are fp32. Every kernel runs
 * on one stream, pg_cu_stream; host code never synchronises except in sync/to_host/sum_squares.
 * The ops table (pg_cuda_ops) lives in ops_cuda.cu; its entries are the functions declared here,
 * each with the signature of its pg_ops entry (src/ops.h says what each computes). */
#ifndef PGOLF_CUDA_COMMON_CUH
#define PGOLF_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "../common.h"
#include "../ops.h"
}

typedef __nv_bfloat16 bf16;

/* one error line naming the call and CUDA's message, then exit (pg_die) */
#define CU_CHECK(call)                                                                                       \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) pg_die("CUDA: %s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, \
                                      __LINE__);                                                             \
    } while (0)
#define CUBLAS_CHECK(call)                                                                                \
    do {                                                                                                  \
        cublasStatus_t s_ = (call);                                                                       \
        if (s_ != CUBLAS_STATUS_SUCCESS) pg_die("cuBLAS: %s failed: status %d (%s:%d)", #call, (int)s_, \
                                                __FILE__, __LINE__);                                      \
    } while (0)
/* after a kernel launch: launch-configuration errors surface here, execution errors at the next sync */
#define CU_LAUNCHED() CU_CHECK(cudaGetLastError())

extern cudaStream_t pg_cu_stream;
extern cublasLtHandle_t pg_cu_lt;
extern cublasHandle_t pg_cu_blas;
/* a device workspace for cuBLASLt (pg_cu_lt_ws_bytes bytes) */
extern void *pg_cu_lt_ws;
extern size_t pg_cu_lt_ws_bytes;
/* creates the stream and handles once (called by pg_cuda_available and alloc) */
void pg_cu_init(void);

static inline unsigned pg_cu_blocks(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 65535u * 16u ? 65535u * 16u : b); /* kernels use grid-stride loops */
}

/* ---- ops_cuda.cu / matmul.cu: memory, conversions, baseline ops, optimizers ---- */
/* (the others are static in ops_cuda.cu; the table there names them) */
void cu_matmul_fwd(pg_act *y, const pg_act *x, const pg_wc *W, int N, int IN, int OUT);
void cu_matmul_bwd(pg_act *dx, float *dW, const pg_act *dy, const pg_act *x, const pg_wc *W, int N, int IN, int OUT,
                   int accumulate_dx);

/* ---- ops_records.cu: the record techniques (src/ops.h) ---- */
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

/* ---- attn.cu: fused causal GQA attention (FlashAttention-style, never materialises T x T) ---- */
void cu_attn_fwd(pg_act *o, float *lse, const pg_act *q, const pg_act *k, const pg_act *v, int B, int T, int H, int Hk,
                 int D);
void cu_attn_bwd(pg_act *dq, pg_act *dk, pg_act *dv, const pg_act *dout, const pg_act *q, const pg_act *k,
                 const pg_act *v, const pg_act *o, const float *lse, int B, int T, int H, int Hk, int D);

#endif
