/* kernels.cuh: the host entry points of the CUDA backend's kernel files, each with the signature of
 * its pg_ops entry (src/ops.h says what each computes); the ops table in ops_cuda.cu names them.
 * Included by cuda_common.cuh and by the CPU kernel emulator's stand-ins (tests/cuda_emu*). */
#ifndef PGOLF_CUDA_KERNELS_CUH
#define PGOLF_CUDA_KERNELS_CUH

#include <stddef.h>

extern "C" {
#include "../ops.h"
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
void cu_attn_decode(pg_act *o, const pg_act *q, const pg_act *k, const pg_act *v, int nb, int n, int T, int H, int Hk,
                    int D);

#endif
