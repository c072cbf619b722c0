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
#include "kernels.cuh" /* src/cuda: the kernels' entry points */
