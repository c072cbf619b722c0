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

/* the kernels' host entry points (also read by the CPU kernel emulator, tests/cuda_emu*) */
#include "kernels.cuh"

#endif
