/* tests/cuda_emu_core/rt.cpp: the CUDA runtime and cuBLAS(Lt) subset of cuda_common.cuh for the emulated
 * core ops, on host memory; the dynamic shared memory of the core kernels */
#include "cuda_common.cuh"
alignas(16) float emb_sm[1 << 16];
alignas(16) float qk_sm[1 << 16];
int cudaGetDeviceCount(int *n) { *n = 1; return 0; }
int cudaGetDevice(int *d) { *d = 0; return 0; }
int cudaGetDeviceProperties(cudaDeviceProp *p, int) { p->major = 9; p->minor = 0; strcpy(p->name, "emu"); return 0; }
/* an H100 SXM's: 132 SMs, 1980 MHz, compute capability 9.0 */
int cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrMultiProcessorCount ? 132 : a == cudaDevAttrClockRate ? 1980000 : a == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
    return 0;
}
int cudaMalloc(void **p, size_t n) { *p = aligned_alloc(256, (n + 255) & ~(size_t)255); memset(*p, 0xff, n); return 0; }
int cudaFree(void *p) { free(p); return 0; }
int cudaStreamCreate(cudaStream_t *s) { *s = (void *)1; return 0; }
int cudaStreamSynchronize(cudaStream_t) { return 0; }
int cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) { memmove(d, s, n); return 0; }
int cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, cudaMemcpyKind, cudaStream_t) {
    if (w > dp || w > sp) pg_die("EMU cudaMemcpy2DAsync: width %zu exceeds a pitch (%zu, %zu)", w, dp, sp);
    for (size_t r = 0; r < h; r++) memmove((char *)d + r * dp, (const char *)s + r * sp, w);
    return 0;
}
int cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t) { memset(p, v, n); return 0; }
struct emu_blas { int x; };
static emu_blas g_h;
int cublasCreate(cublasHandle_t *h) { *h = &g_h; return 0; }
int cublasLtCreate(cublasLtHandle_t *h) { *h = &g_h; return 0; }
int cublasSetStream(cublasHandle_t, cudaStream_t) { return 0; }
int cublasSetMathMode(cublasHandle_t, cublasMath_t) { return 0; }
static float ld_el(const void *p, cudaDataType_t t, size_t i) {
    return t == CUDA_R_32F ? ((const float *)p)[i] : __bfloat162float(((const bf16 *)p)[i]);
}
static void st_el(void *p, cudaDataType_t t, size_t i, float v) {
    if (t == CUDA_R_32F) ((float *)p)[i] = v;
    else ((bf16 *)p)[i] = __float2bfloat16_rn(v);
}
/* column-major: D(m,n) = alpha op(A)(m,k) op(B)(k,n) + beta C; A stored (ta N: m x k, T: k x m) with lda */
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A,
                 cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, float beta, const void *C,
                 cudaDataType_t ct, int ldc, void *D, int ldd) {
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m || ldd < m)
        pg_die("EMU gemm: leading dimension too small (m %d n %d k %d lda %d ldb %d ldc %d)", m, n, k, lda, ldb, ldc);
    float *out = (float *)malloc((size_t)m * n * sizeof(float));
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                float a = ta == CUBLAS_OP_N ? ld_el(A, at, i + (size_t)p * lda) : ld_el(A, at, p + (size_t)i * lda);
                float b = tb == CUBLAS_OP_N ? ld_el(B, bt, p + (size_t)j * ldb) : ld_el(B, bt, j + (size_t)p * ldb);
                s += (double)a * b;
            }
            float v = alpha * (float)s;
            if (beta != 0.0f) v += beta * ld_el(C, ct, i + (size_t)j * ldc);
            out[i + (size_t)j * m] = v;
        }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) st_el(D, ct, i + (size_t)j * ldd, out[i + (size_t)j * m]);
    free(out);
}
int cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *alpha,
                 const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb, const void *beta,
                 void *C, cudaDataType_t ct, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
    gemm(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, C, ct, ldc, C, ldc);
    return 0;
}
int cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t s) {
    if (c != CUBLAS_COMPUTE_32F || s != CUDA_R_32F) pg_die("EMU: unexpected compute/scale type");
    *d = (emu_lt_desc *)calloc(1, sizeof(emu_lt_desc));
    return 0;
}
int cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, int attr, const void *v, size_t n) {
    if (n != sizeof(cublasOperation_t)) pg_die("EMU: attribute size");
    if (attr == CUBLASLT_MATMUL_DESC_TRANSA) d->ta = *(const cublasOperation_t *)v;
    else if (attr == CUBLASLT_MATMUL_DESC_TRANSB) d->tb = *(const cublasOperation_t *)v;
    else pg_die("EMU: unknown desc attribute");
    return 0;
}
int cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t, uint64_t rows, uint64_t cols, int64_t ld) {
    if (ld < (int64_t)rows) pg_die("EMU: layout ld %lld < rows %llu", (long long)ld, (unsigned long long)rows);
    *l = (emu_lt_layout *)malloc(sizeof(emu_lt_layout));
    **l = emu_lt_layout{t, rows, cols, ld};
    return 0;
}
int cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) { *p = &g_h; return 0; }
int cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t, int, const void *, size_t) { return 0; }
int cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t) { return 0; }
int cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t, cublasLtMatrixLayout_t,
                                   cublasLtMatrixLayout_t, cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                   cublasLtMatmulPreference_t, int, cublasLtMatmulHeuristicResult_t *r, int *found) {
    memset(r, 0, sizeof(*r));
    *found = 1;
    return 0;
}
int cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t d, const void *alpha, const void *A, cublasLtMatrixLayout_t la,
                   const void *B, cublasLtMatrixLayout_t lb, const void *beta, const void *C, cublasLtMatrixLayout_t lc,
                   void *D, cublasLtMatrixLayout_t ldd, const cublasLtMatmulAlgo_t *, void *, size_t, cudaStream_t) {
    const int m = (int)ldd->rows, n = (int)ldd->cols;
    const int k = (int)(d->ta == CUBLAS_OP_N ? la->cols : la->rows);
    const int am = (int)(d->ta == CUBLAS_OP_N ? la->rows : la->cols);
    const int bk = (int)(d->tb == CUBLAS_OP_N ? lb->rows : lb->cols), bn = (int)(d->tb == CUBLAS_OP_N ? lb->cols : lb->rows);
    if (am != m || bk != k || bn != n || lc->rows != ldd->rows || lc->cols != ldd->cols || lc->t != ldd->t)
        pg_die("EMU cublasLtMatmul: inconsistent shapes (D %dx%d, op(A) %dx%d, op(B) %dx%d)", m, n, am, k, bk, bn);
    gemm(d->ta, d->tb, m, n, k, *(const float *)alpha, A, la->t, (int)la->ld, B, lb->t, (int)lb->ld,
         *(const float *)beta, C, lc->t, (int)lc->ld, D, (int)ldd->ld);
    return 0;
}
