/* matmul.cu: the CUDA backend's matmuls through cuBLASLt: bf16 A and B, fp32 accumulation
 * (CUBLAS_COMPUTE_32F, fp32 alpha/beta), bf16 outputs for activations, fp32 outputs (beta = 1) for
 * the weight gradients.
 *
 * Row-major to column-major. cuBLAS(Lt) is column-major; a row-major (R, C) matrix M in memory is
 * the column-major (C, R) matrix M^T with leading dimension C. With that reading (ops.h shapes):
 *   forward   y(N,OUT) = x(N,IN) W(OUT,IN)^T   <=>   y^T (OUT x N) = W x^T
 *             A = W's memory read column-major = W^T (IN x OUT, ld IN), op T  -> W   (m = OUT, k = IN)
 *             B = x's memory = x^T (IN x N, ld IN), op N                       -> x^T (k = IN, n = N)
 *             D = y's memory = y^T (OUT x N, ld OUT)
 *   dx        dx(N,IN) (+)= dy(N,OUT) W(OUT,IN) <=> dx^T (IN x N) = W^T dy^T
 *             A = W's memory = W^T (IN x OUT, ld IN), op N                    (m = IN, k = OUT)
 *             B = dy's memory = dy^T (OUT x N, ld OUT), op N                  (k = OUT, n = N)
 *             D = dx's memory = dx^T (IN x N, ld IN), beta = accumulate ? 1 : 0
 *   dW        dW(OUT,IN) += dy^T x            <=>   dW^T (IN x OUT) = x^T dy
 *             A = x's memory = x^T (IN x N, ld IN), op N                      (m = IN, k = N)
 *             B = dy's memory = dy^T (OUT x N, ld OUT), op T -> dy (N x OUT)  (k = N, n = OUT)
 *             C = D = dW's memory = dW^T (IN x OUT, ld IN), fp32, beta = 1
 * One plan (descriptor, layouts, heuristic's algorithm) per distinct shape/alignment, cached. */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_common.cuh"

typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    cudaDataType_t dtype; /* C and D */
    int alA, alB, alC;    /* pointer alignments (bytes, up to 256) */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} mm_plan;

static mm_plan **g_plans;
static int g_nplans, g_capplans;

static int ptr_align(const void *p) {
    const uintptr_t u = (uintptr_t)p;
    int a = 256;
    while (a > 2 && (u % (uintptr_t)a) != 0) a >>= 1;
    return a;
}

static const mm_plan *get_plan(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
                               int ldc, cudaDataType_t dtype, const void *A, const void *B, const void *C) {
    const int alA = ptr_align(A), alB = ptr_align(B), alC = ptr_align(C);
    for (int i = 0; i < g_nplans; i++) {
        const mm_plan *p = g_plans[i];
        if (p->ta == ta && p->tb == tb && p->m == m && p->n == n && p->k == k && p->lda == lda && p->ldb == ldb &&
            p->ldc == ldc && p->dtype == dtype && p->alA == alA && p->alB == alB && p->alC == alC)
            return p;
    }
    mm_plan *p = (mm_plan *)xcalloc(1, sizeof(mm_plan));
    p->ta = ta, p->tb = tb, p->m = m, p->n = n, p->k = k, p->lda = lda, p->ldb = ldb, p->ldc = ldc;
    p->dtype = dtype, p->alA = alA, p->alB = alB, p->alC = alC;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    /* layouts describe the matrices as stored (before op): op N -> (rows, cols) = (m, k) for A */
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m,
                                            lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k,
                                            ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->lc, dtype, m, n, ldc));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    uint64_t ws = pg_cu_lt_ws_bytes;
    uint32_t a32 = (uint32_t)alA, b32 = (uint32_t)alB, c32 = (uint32_t)alC;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &a32, sizeof(a32)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &b32, sizeof(b32)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &c32, sizeof(c32)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &c32, sizeof(c32)));
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(pg_cu_lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, 1, &res, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (found < 1)
        pg_die("cuBLASLt: no algorithm for a %dx%dx%d matmul (ops %c%c, ld %d/%d/%d, alignment %d/%d/%d)", m, n, k,
               ta == CUBLAS_OP_N ? 'N' : 'T', tb == CUBLAS_OP_N ? 'N' : 'T', lda, ldb, ldc, alA, alB, alC);
    p->algo = res.algo;
    if (g_nplans == g_capplans) {
        g_capplans = g_capplans ? 2 * g_capplans : 32;
        g_plans = (mm_plan **)realloc(g_plans, (size_t)g_capplans * sizeof(mm_plan *));
        if (!g_plans) pg_die("out of host memory");
    }
    g_plans[g_nplans++] = p;
    return p;
}

/* D = A op B + beta*C with C = D (in place) */
static void run_plan(const mm_plan *p, const void *A, const void *B, void *D, float beta) {
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(pg_cu_lt, p->desc, &alpha, A, p->la, B, p->lb, &beta, D, p->lc, D, p->lc, &p->algo,
                                pg_cu_lt_ws, pg_cu_lt_ws_bytes, pg_cu_stream));
}

void cu_matmul_fwd(pg_act *y, const pg_act *x, const pg_wc *W, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (IN <= 0) { /* an empty sum */
        CU_CHECK(cudaMemsetAsync(y, 0, (size_t)N * OUT * sizeof(bf16), pg_cu_stream));
        return;
    }
    const mm_plan *p = get_plan(CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, IN, IN, OUT, CUDA_R_16BF, W, x, y);
    run_plan(p, W, x, y, 0.0f);
}

void cu_matmul_bwd(pg_act *dx, float *dW, const pg_act *dy, const pg_act *x, const pg_wc *W, int N, int IN, int OUT,
                   int accumulate_dx) {
    if (N <= 0 || IN <= 0 || OUT <= 0) return;
    if (dx) {
        const mm_plan *p = get_plan(CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, IN, OUT, IN, CUDA_R_16BF, W, dy, dx);
        run_plan(p, W, dy, dx, accumulate_dx ? 1.0f : 0.0f);
    }
    if (dW) {
        const mm_plan *p = get_plan(CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, IN, OUT, IN, CUDA_R_32F, x, dy, dW);
        run_plan(p, x, dy, dW, 1.0f);
    }
}
