/* tests/cuda_emu_core: the emulator's stand-in for src/cuda/cuda_common.cuh when ops_cuda.cu and
 * matmul.cu run on the host (run.sh). Everything of tests/cuda_emu/cuda_common.cuh (cuB's fiber
 * emulator), plus the CUDA runtime over host memory, the device intrinsics the core kernels use
 * beyond emu.h, and cuBLAS / cuBLASLt computed on the host from the descriptors and layouts (so the
 * column-major mappings of matmul.cu and Muon are checked, not re-derived; rt.cpp). The renames keep
 * this build's table and stream apart from those emu.cpp defines for the record tests. */
#pragma once
#define pg_cu_stream pg_cu_stream_core
#define pg_cuda_ops pg_cuda_ops_core
#define pg_cuda_available pg_cuda_available_core
#include <float.h>
#include "cuda_emu/cuda_common.cuh" /* copied beside this file by run.sh */
#undef CU_CHECK
#define cudaErrorInsufficientDriver 35
static inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
static inline cudaError_t cudaGetLastError(void) { return 0; }
#define CU_CHECK(call) do { if ((call) != 0) pg_die("EMU: %s failed", #call); } while (0)
typedef int cublasStatus_t;
#define CUBLAS_STATUS_SUCCESS 0
#define CUBLAS_CHECK(call) do { if ((call) != 0) pg_die("EMU cuBLAS: %s failed", #call); } while (0)
struct cudaDeviceProp { int major, minor; char name[256]; };
int cudaGetDeviceCount(int *n);
int cudaGetDevice(int *d);
int cudaGetDeviceProperties(cudaDeviceProp *p, int d);
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrClockRate, cudaDevAttrComputeCapabilityMajor,
                      cudaDevAttrComputeCapabilityMinor };
int cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
int cudaMalloc(void **p, size_t n);
int cudaFree(void *p);
int cudaStreamCreate(cudaStream_t *s);
int cudaStreamSynchronize(cudaStream_t s);
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
int cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
int cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, cudaMemcpyKind k, cudaStream_t st);
int cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st);
/* device intrinsics beyond emu.h */
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline int __popc(unsigned v) { return __builtin_popcount(v); }
static inline int atomicMax(int *p, int v) { int o = *p; if (v > o) *p = v; return o; }
/* a ballot as an OR over the warp through xor shuffles (each a warp collective of emu.h) */
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    unsigned b = pred ? 1u << (threadIdx.x & 31) : 0u;
    for (int o = 16; o > 0; o >>= 1) b |= __float_as_uint(__shfl_xor_sync(mask, __uint_as_float(b), o));
    return b;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)__shfl_xor_sync(mask, 0.0f, 1); }

/* cuBLAS / cuBLASLt subset */
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType_t { CUDA_R_16BF, CUDA_R_32F };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32 };
enum cublasMath_t { CUBLAS_DEFAULT_MATH };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
typedef struct emu_blas *cublasHandle_t;
typedef struct emu_blas *cublasLtHandle_t;
struct emu_lt_desc { cublasOperation_t ta, tb; };
typedef emu_lt_desc *cublasLtMatmulDesc_t;
struct emu_lt_layout { cudaDataType_t t; uint64_t rows, cols; int64_t ld; };
typedef emu_lt_layout *cublasLtMatrixLayout_t;
typedef struct emu_blas *cublasLtMatmulPreference_t;
struct cublasLtMatmulAlgo_t { int dummy; };
struct cublasLtMatmulHeuristicResult_t { cublasLtMatmulAlgo_t algo; size_t workspaceSize; int state; };
enum { CUBLASLT_MATMUL_DESC_TRANSA, CUBLASLT_MATMUL_DESC_TRANSB };
enum { CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
       CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
       CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES };
int cublasCreate(cublasHandle_t *h);
int cublasLtCreate(cublasLtHandle_t *h);
int cublasSetStream(cublasHandle_t h, cudaStream_t s);
int cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
int cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                 const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                 void *C, cudaDataType_t ct, int ldc, cublasComputeType_t comp, cublasGemmAlgo_t algo);
int cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t s);
int cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, int attr, const void *v, size_t n);
int cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols, int64_t ld);
int cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
int cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p, int attr, const void *v, size_t n);
int cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
int cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t a,
                                   cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dd,
                                   cublasLtMatmulPreference_t p, int req, cublasLtMatmulHeuristicResult_t *r, int *found);
int cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha, const void *A, cublasLtMatrixLayout_t la,
                   const void *B, cublasLtMatrixLayout_t lb, const void *beta, const void *C, cublasLtMatrixLayout_t lc,
                   void *D, cublasLtMatrixLayout_t ld, const cublasLtMatmulAlgo_t *algo, void *ws, size_t wss,
                   cudaStream_t s);

extern cublasLtHandle_t pg_cu_lt;
extern cublasHandle_t pg_cu_blas;
extern void *pg_cu_lt_ws;
extern size_t pg_cu_lt_ws_bytes;
void pg_cu_init(void);
/* ---- ops_cuda.cu / matmul.cu: memory, conversions, baseline ops, optimizers ---- */
/* (the others are static in ops_cuda.cu; the table there names them) */
void cu_matmul_fwd(pg_act *y, const pg_act *x, const pg_wc *W, int N, int IN, int OUT);
void cu_matmul_bwd(pg_act *dx, float *dW, const pg_act *dy, const pg_act *x, const pg_wc *W, int N, int IN, int OUT,
                   int accumulate_dx);

