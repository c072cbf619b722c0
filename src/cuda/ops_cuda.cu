/* ops_cuda.cu: the CUDA backend (src/ops.h): device memory, conversions, the baseline's elementwise,
 * norm, embedding and loss kernels, the optimizers, and the ops table pg_cuda_ops. Matmuls are in
 * matmul.cu (cuBLASLt); attention and the record techniques in attn.cu and ops_records.cu.
 *
 * Conventions: activations and compute weights are bf16, everything else fp32; all arithmetic is
 * fp32 (double where the CPU op accumulates in double and the sum decides a result: sum_squares,
 * Muon's Frobenius norm). Every kernel runs on pg_cu_stream; host code synchronises only where a
 * result comes back to the host (to_host, sum_squares) or host memory is handed over (to_device),
 * and before cudaFree. Kernel shapes, in one line each:
 *   elementwise ops: grid-stride loops, 16-byte (8 x bf16) accesses when every pointer is 16-byte
 *     aligned and the channel count allows it, a scalar tail;
 *   row ops (rmsnorm, mix_norm, q/k prep): one warp per row, warp-shuffle sums, two passes;
 *   parameter-gradient reductions over tokens (dscale, dmix, dgain): deterministic two-pass column
 *     sums (per-block partials in a fixed order, then one block per column sums the partials);
 *   softcap_ce: one block per row, online logsumexp, then one pass writing dz (or the softcapped
 *     logits when there is no gradient, as the CPU op leaves them);
 *   embed_bwd: one block per vocabulary row, scanning the token ids in order (deterministic, no
 *     atomics), the row's sum kept in shared memory;
 *   Adam, EMA: elementwise with explicit fp32 roundings (bit-identical to the CPU op);
 *   Muon: momentum, MuonEq-R and the Frobenius norm on the device, Newton-Schulz 5 with fp32
 *     cuBLAS GEMMs (the CPU op's arithmetic; no host synchronisation). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

/* ---- globals of cuda_common.cuh ---- */
cudaStream_t pg_cu_stream;
cublasLtHandle_t pg_cu_lt;
cublasHandle_t pg_cu_blas;
void *pg_cu_lt_ws;
size_t pg_cu_lt_ws_bytes;

static int g_inited;
static size_t g_cur, g_peak;

/* live allocations (device pointer -> bytes), for peak tracking and free */
typedef struct {
    void *p;
    size_t bytes;
} cu_rec;
static cu_rec *g_recs;
static size_t g_nrecs, g_caprecs;

static void *dev_alloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess)
        pg_die("CUDA: cannot allocate %zu bytes of device memory (%s; %zu MiB allocated by pgolf)", bytes,
               cudaGetErrorString(e), g_cur >> 20);
    if (g_nrecs == g_caprecs) {
        g_caprecs = g_caprecs ? 2 * g_caprecs : 256;
        g_recs = (cu_rec *)realloc(g_recs, g_caprecs * sizeof(cu_rec));
        if (!g_recs) pg_die("out of host memory");
    }
    g_recs[g_nrecs].p = p;
    g_recs[g_nrecs].bytes = bytes;
    g_nrecs++;
    g_cur += bytes;
    if (g_cur > g_peak) g_peak = g_cur;
    return p;
}

static void dev_free(void *p) {
    if (!p) return;
    size_t i = g_nrecs;
    while (i > 0 && g_recs[i - 1].p != p) i--;
    if (i == 0) pg_die("CUDA: free of a pointer this backend did not allocate");
    g_cur -= g_recs[i - 1].bytes;
    g_recs[i - 1] = g_recs[--g_nrecs];
    /* kernels still queued may read p: wait for them */
    CU_CHECK(cudaStreamSynchronize(pg_cu_stream));
    CU_CHECK(cudaFree(p));
}

void pg_cu_init(void) {
    if (g_inited) return;
    /* the current device: device 0, or the one dist.c chose (pg_cuda_select_device) */
    CU_CHECK(cudaStreamCreate(&pg_cu_stream)); /* blocking: ordered with the legacy default stream too */
    CUBLAS_CHECK(cublasLtCreate(&pg_cu_lt));
    CUBLAS_CHECK(cublasCreate(&pg_cu_blas));
    CUBLAS_CHECK(cublasSetStream(pg_cu_blas, pg_cu_stream));
    CUBLAS_CHECK(cublasSetMathMode(pg_cu_blas, CUBLAS_DEFAULT_MATH)); /* no TF32 in Muon's fp32 GEMMs */
    pg_cu_lt_ws_bytes = (size_t)32 << 20;
    g_inited = 1;
    pg_cu_lt_ws = dev_alloc(pg_cu_lt_ws_bytes);
}

extern "C" int pg_cuda_available(char *why, size_t n) {
    static int cached = -1;
    static char cwhy[512];
    if (cached < 0) {
        int count = 0, dev = 0;
        cudaError_t e = cudaGetDeviceCount(&count);
        cudaDeviceProp prop;
        if (e != cudaSuccess || count <= 0) {
            snprintf(cwhy, sizeof(cwhy), "no CUDA device (%s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports none");
            cudaGetLastError();
            cached = 0;
        } else if ((e = cudaGetDevice(&dev)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess) {
            snprintf(cwhy, sizeof(cwhy), "CUDA device query failed (%s)", cudaGetErrorString(e));
            cudaGetLastError();
            cached = 0;
        } else if (prop.major < 8) {
            snprintf(cwhy, sizeof(cwhy), "CUDA device %d (%.200s) has compute capability %d.%d; bf16 needs 8.0 or newer",
                     dev, prop.name, prop.major, prop.minor);
            cached = 0;
        } else if ((e = cudaFree(0)) != cudaSuccess) { /* creates the context */
            snprintf(cwhy, sizeof(cwhy), "CUDA context creation failed (%s)", cudaGetErrorString(e));
            cudaGetLastError();
            cached = 0;
        } else {
            pg_cu_init();
            cached = 1;
        }
    }
    if (!cached && why && n) snprintf(why, n, "%s", cwhy);
    return cached;
}

/* Dense bf16 tensor-core peak of the current device in FLOP/s (fp32 accumulation), for MFU: SMs x
 * the highest SM clock x FLOPs per SM and clock (Hopper 4096: 132 x 1.83 GHz x 4096 = 989 TFLOP/s
 * on an H100 SXM; A100 2048). 0 when unknown (other architectures). */
extern "C" double pg_cuda_peak_flops(void) {
    int dev = 0, sms = 0, khz = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) ||
        cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev) ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) {
        cudaGetLastError();
        return 0;
    }
    const double per_clk = major == 9 ? 4096.0 : (major == 8 && minor == 0) ? 2048.0 : 0.0;
    return (double)sms * (double)khz * 1e3 * per_clk;
}

/* ---- scratch (device): partial sums of the reductions; grown on demand, never shrunk ---- */
static float *g_scratch;
static size_t g_scratch_n;
static float *scratch(size_t nfloats) {
    if (nfloats > g_scratch_n) {
        if (g_scratch) dev_free(g_scratch); /* synchronises first: queued kernels may still use it */
        g_scratch_n = nfloats + nfloats / 4 + 1024;
        g_scratch = (float *)dev_alloc(g_scratch_n * sizeof(float));
    }
    return g_scratch;
}
/* two doubles' worth of device memory per use site of sum_squares */
static double *g_ss_part; /* SS_BLOCKS partials + 1 result */
#define SS_BLOCKS 256

/* ---- small device helpers ---- */
static inline int al16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
#define T256 256

__device__ __forceinline__ float bf(bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16 f2bf(float v) { return __float2bfloat16_rn(v); }

/* V consecutive bf16 <-> floats (V = 8: one 16-byte access; the address must be 16-byte aligned) */
template <int V> __device__ __forceinline__ void ldv(const bf16 *p, float *f) {
    if (V == 8) {
        uint4 u = *reinterpret_cast<const uint4 *>(p);
        const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float2 t = __bfloat1622float2(h[k]);
            f[2 * k] = t.x;
            f[2 * k + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) f[k] = bf(p[k]);
    }
}
template <int V> __device__ __forceinline__ void stv(bf16 *p, const float *f) {
    if (V == 8) {
        uint4 u;
        __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&u);
#pragma unroll
        for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
        *reinterpret_cast<uint4 *>(p) = u;
    } else {
#pragma unroll
        for (int k = 0; k < V; k++) p[k] = f2bf(f[k]);
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    /* butterfly: every lane ends with the same value (the pairwise sums are commutative) */
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#define A_(p) ((bf16 *)(p))
#define CA_(p) ((const bf16 *)(p))

/* ---- generic elementwise launch: Op::run<V>(i) handles elements i..i+V-1 ---- */
template <class Op> __global__ void __launch_bounds__(T256) ew_kernel(Op op, size_t nvec, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, t = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (size_t i = t; i < nvec; i += stride) op.template run<8>(i * 8);
    for (size_t i = nvec * 8 + t; i < n; i += stride) op.template run<1>(i);
}
/* vec: whether the 8-wide path is allowed (alignment and row structure checked by the caller) */
template <class Op> static void ew_launch(const Op &op, size_t n, int vec) {
    if (n == 0) return;
    size_t nvec = vec ? n / 8 : 0;
    size_t work = nvec > n - nvec * 8 ? nvec : n - nvec * 8;
    ew_kernel<Op><<<pg_cu_blocks(work, T256), T256, 0, pg_cu_stream>>>(op, nvec, n);
    CU_LAUNCHED();
}

/* ---- deterministic column sums: out[v*out_stride + c] += sum_n contrib_v(n, c), v < NV ----
 * Op(n, c, acc) does the elementwise work of element (n, c) and adds its NV contributions to acc.
 * Kernel 1: block = CT columns x (256/CT) row-threads, each thread CR_ITERS rows; the block's sums
 * (fixed order) go to partial[(rb*NV + v)*C + c]. Kernel 2: one block per (c, v) sums the row
 * blocks' partials in a fixed tree. */
#define CR_ITERS 16
template <int NV, class Op>
__global__ void __launch_bounds__(T256) colred_kernel(Op op, int N, int C, int CT, float *partial) {
    __shared__ float sm[NV][T256];
    const int tx = threadIdx.x % CT, ty = threadIdx.x / CT, RT = T256 / CT;
    const int c = blockIdx.y * CT + tx;
    const long r0 = (long)blockIdx.x * RT * CR_ITERS;
    float acc[NV];
#pragma unroll
    for (int v = 0; v < NV; v++) acc[v] = 0.0f;
    if (c < C)
        for (int it = 0; it < CR_ITERS; it++) {
            const long n = r0 + ty + (long)it * RT;
            if (n < N) op(n, c, acc);
        }
#pragma unroll
    for (int v = 0; v < NV; v++) sm[v][threadIdx.x] = acc[v];
    __syncthreads();
    if (ty == 0 && c < C)
        for (int v = 0; v < NV; v++) {
            float s = 0.0f;
            for (int j = 0; j < RT; j++) s += sm[v][j * CT + tx];
            partial[((size_t)blockIdx.x * NV + v) * C + c] = s;
        }
}

/* out[v*out_stride + c] += sum_{r < RB} partial[(r*NV + v)*C + c]; grid (C, NV) */
__global__ void __launch_bounds__(T256) colred_final(const float *partial, long RB, int NV, int C, float *out,
                                                     long out_stride) {
    __shared__ float sm[T256];
    const int c = blockIdx.x, v = blockIdx.y;
    float s = 0.0f;
    for (long r = threadIdx.x; r < RB; r += T256) s += partial[((size_t)r * NV + v) * C + c];
    sm[threadIdx.x] = s;
    __syncthreads();
    for (int h = T256 / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) sm[threadIdx.x] += sm[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[(size_t)v * out_stride + c] += sm[0];
}

static void colred_finish(const float *partial, long RB, int NV, int C, float *out, long out_stride) {
    colred_final<<<dim3((unsigned)C, (unsigned)NV), T256, 0, pg_cu_stream>>>(partial, RB, NV, C, out, out_stride);
    CU_LAUNCHED();
}

template <int NV, class Op> static void colred(const Op &op, int N, int C, float *out, long out_stride) {
    if (N <= 0 || C <= 0) return;
    int CT = 1;
    while (CT < C && CT < 32) CT *= 2; /* columns per block: 32, or the next power of two >= C */
    const long RT = T256 / CT, rows = RT * CR_ITERS;
    const long RB = ((long)N + rows - 1) / rows;
    const unsigned tiles = (unsigned)((C + CT - 1) / CT);
    PG_CHECK(RB < 2147483647L && tiles <= 65535u);
    float *part = scratch((size_t)RB * NV * C);
    colred_kernel<NV, Op><<<dim3((unsigned)RB, tiles), T256, 0, pg_cu_stream>>>(op, N, C, CT, part);
    CU_LAUNCHED();
    colred_finish(part, RB, NV, C, out, out_stride);
}

/* ---- memory ops ---- */
static void *cu_alloc(size_t bytes) {
    pg_cu_init();
    return dev_alloc(bytes);
}
static void cu_free(void *p) { dev_free(p); }
static void cu_zero(void *p, size_t bytes) {
    if (bytes) CU_CHECK(cudaMemsetAsync(p, 0, bytes, pg_cu_stream));
}
static void cu_to_device(void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    CU_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, pg_cu_stream));
    CU_CHECK(cudaStreamSynchronize(pg_cu_stream)); /* the caller may reuse host_src at once */
}
static void cu_to_host(void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    CU_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, pg_cu_stream));
    CU_CHECK(cudaStreamSynchronize(pg_cu_stream));
}
static void cu_copy_rows(void *dst, size_t dst_pitch, const void *src, size_t src_pitch, size_t row_bytes,
                         size_t rows) {
    if (row_bytes && rows)
        CU_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, cudaMemcpyDeviceToDevice,
                                   pg_cu_stream));
}
static void cu_sync(void) { CU_CHECK(cudaStreamSynchronize(pg_cu_stream)); }
static size_t cu_peak(void) { return g_peak; }

/* ---- conversions ---- */
__global__ void __launch_bounds__(T256) f32_to_bf16_kernel(bf16 *dst, const float *src, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = f2bf(src[i]);
}
static void cu_weights_to_compute(pg_wc *wc, const float *w, size_t n) {
    if (!n) return;
    f32_to_bf16_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(A_(wc), w, n);
    CU_LAUNCHED();
}
static void cu_act_from_f32(pg_act *dst, const float *host, size_t n) {
    uint16_t *h = (uint16_t *)xmalloc((n ? n : 1) * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) h[i] = pg_f32_to_bf16(host[i]);
    cu_to_device(dst, h, n * sizeof(uint16_t));
    free(h);
}
static void cu_act_to_f32(float *host, const pg_act *src, size_t n) {
    uint16_t *h = (uint16_t *)xmalloc((n ? n : 1) * sizeof(uint16_t));
    cu_to_host(h, src, n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) host[i] = pg_bf16_to_f32(h[i]);
    free(h);
}

/* ---- embedding ---- */
__global__ void __launch_bounds__(T256) embed_fwd_kernel(bf16 *y, const int32_t *idx, const bf16 *table, int N, int C) {
    const size_t n_all = (size_t)N * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_all; i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / C, c = i % C;
        y[i] = table[(size_t)idx[n] * C + c];
    }
}
/* 8 channels per thread (C % 8 == 0, 16-byte aligned rows) */
__global__ void __launch_bounds__(T256) embed_fwd_kernel8(bf16 *y, const int32_t *idx, const bf16 *table, int N, int C) {
    const int C8 = C / 8;
    const size_t n_all = (size_t)N * C8;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_all; i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / C8, c = (i % C8) * 8;
        *reinterpret_cast<uint4 *>(y + n * C + c) = *reinterpret_cast<const uint4 *>(table + (size_t)idx[n] * C + c);
    }
}
/* idx: device memory (model.c copies the host token ids into m->idx / m->bidx first) */
static void cu_embed_fwd(pg_act *y, const int32_t *idx, const pg_wc *table, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (C % 8 == 0 && al16(y) && al16(table)) {
        embed_fwd_kernel8<<<pg_cu_blocks((size_t)N * (C / 8), T256), T256, 0, pg_cu_stream>>>(A_(y), idx, CA_(table), N, C);
    } else {
        embed_fwd_kernel<<<pg_cu_blocks((size_t)N * C, T256), T256, 0, pg_cu_stream>>>(A_(y), idx, CA_(table), N, C);
    }
    CU_LAUNCHED();
}

/* dtable[v] += sum of dy[n] over the tokens n with idx[n] == v, in increasing n (the CPU op's
 * order; deterministic, no float atomics). The op has no vocabulary size: the rows scanned are
 * 0..max(idx), found on the device first (integer atomicMax, exact). One block per vocabulary row v
 * (grid-stride over rows): the block scans idx in chunks of EMB_THREADS tokens, lists the chunk's
 * matches in order (warp ballots + per-warp counts), then every thread adds the listed dy rows into
 * its own channels of the row sum acc (shared memory, C floats), which starts from dtable's row and
 * is written back when some token matched. */
#define EMB_THREADS 256
#define EMB_GRID 1024
__global__ void __launch_bounds__(T256) max_idx_kernel(const int32_t *idx, int N, int *out) {
    int m = -1;
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (long)gridDim.x * blockDim.x)
        m = idx[i] > m ? idx[i] : m;
    atomicMax(out, m);
}
__global__ void __launch_bounds__(EMB_THREADS) embed_bwd_kernel(float *dtable, const bf16 *dy, const int32_t *idx,
                                                                int N, int C, const int *vmax) {
    extern __shared__ float emb_sm[];
    float *acc = emb_sm;             /* C floats */
    int *list = (int *)(emb_sm + C); /* EMB_THREADS ints */
    __shared__ int wcnt[EMB_THREADS / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = EMB_THREADS / 32;
    const int V = *vmax + 1;
    for (int v = blockIdx.x; v < V; v += gridDim.x) {
        float *row = dtable + (size_t)v * C;
        for (int c = tid; c < C; c += EMB_THREADS) acc[c] = row[c];
        int any = 0;
        for (int base = 0; base < N; base += EMB_THREADS) {
            const int n = base + tid;
            const int match = n < N && idx[n] == v;
            const unsigned ball = __ballot_sync(0xffffffffu, match);
            if (lane == 0) wcnt[warp] = __popc(ball);
            __syncthreads(); /* wcnt complete (the previous chunk's readers finished at its last barrier) */
            int off = 0, total = 0;
            for (int w = 0; w < nw; w++) {
                off += w < warp ? wcnt[w] : 0;
                total += wcnt[w];
            }
            if (match) list[off + __popc(ball & ((1u << lane) - 1u))] = n;
            __syncthreads(); /* list complete */
            for (int j = 0; j < total; j++) {
                const bf16 *src = dy + (size_t)list[j] * C;
                for (int c = tid; c < C; c += EMB_THREADS) acc[c] += bf(src[c]);
            }
            any |= total;
            __syncthreads(); /* before the next chunk rewrites wcnt and list */
        }
        if (any)
            for (int c = tid; c < C; c += EMB_THREADS) row[c] = acc[c];
        __syncthreads(); /* acc is refilled for the next row */
    }
}
static int *g_dev_int; /* one device int: embed_bwd's max token id */

/* idx: device memory */
static void cu_embed_bwd(float *dtable, const pg_act *dy, const int32_t *idx, int N, int C) {
    if (N <= 0 || C <= 0) return;
    const size_t smem = (size_t)C * sizeof(float) + EMB_THREADS * sizeof(int);
    if (smem > 48 * 1024) pg_die("CUDA embed_bwd: %d channels exceed the kernel's shared memory", C);
    if (!g_dev_int) g_dev_int = (int *)dev_alloc(sizeof(int));
    CU_CHECK(cudaMemsetAsync(g_dev_int, 0xff, sizeof(int), pg_cu_stream)); /* -1 */
    const unsigned gm = pg_cu_blocks((size_t)N, T256), grid_max = gm < 1024 ? gm : 1024;
    max_idx_kernel<<<grid_max, T256, 0, pg_cu_stream>>>(idx, N, g_dev_int);
    CU_LAUNCHED();
    embed_bwd_kernel<<<EMB_GRID, EMB_THREADS, smem, pg_cu_stream>>>(dtable, CA_(dy), idx, N, C, g_dev_int);
    CU_LAUNCHED();
}

/* ---- norms: one warp per row ---- */
#define ROWS_PER_BLOCK 8 /* 8 warps of 32 */
static unsigned row_blocks(long rows) { return pg_cu_blocks((size_t)rows, ROWS_PER_BLOCK); }

template <int V>
__global__ void __launch_bounds__(T256) rmsnorm_fwd_kernel(bf16 *y, float *rstd, const bf16 *x, int N, int C) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < N;
         row += (long)gridDim.x * ROWS_PER_BLOCK) {
        const bf16 *xr = x + (size_t)row * C;
        bf16 *yr = y + (size_t)row * C;
        float f[V], ss = 0.0f;
        for (int c = lane * V; c < C; c += 32 * V) {
            ldv<V>(xr + c, f);
#pragma unroll
            for (int k = 0; k < V; k++) ss += f[k] * f[k];
        }
        ss = warp_sum(ss);
        const float r = 1.0f / sqrtf(ss / (float)C + FLT_EPSILON);
        if (lane == 0) rstd[row] = r;
        for (int c = lane * V; c < C; c += 32 * V) {
            ldv<V>(xr + c, f);
#pragma unroll
            for (int k = 0; k < V; k++) f[k] *= r;
            stv<V>(yr + c, f);
        }
    }
}
static void cu_rmsnorm_fwd(pg_act *y, float *rstd, const pg_act *x, int N, int C) {
    if (N <= 0) return;
    if (C % 8 == 0 && al16(y) && al16(x))
        rmsnorm_fwd_kernel<8><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(y), rstd, CA_(x), N, C);
    else
        rmsnorm_fwd_kernel<1><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(y), rstd, CA_(x), N, C);
    CU_LAUNCHED();
}

template <int V>
__global__ void __launch_bounds__(T256) rmsnorm_bwd_kernel(bf16 *dx, const bf16 *dy, const bf16 *y, const float *rstd,
                                                           int N, int C, int acc) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < N;
         row += (long)gridDim.x * ROWS_PER_BLOCK) {
        const size_t o = (size_t)row * C;
        float g[V], yy[V], d[V], dot = 0.0f;
        for (int c = lane * V; c < C; c += 32 * V) {
            ldv<V>(dy + o + c, g);
            ldv<V>(y + o + c, yy);
#pragma unroll
            for (int k = 0; k < V; k++) dot += g[k] * yy[k];
        }
        dot = warp_sum(dot);
        const float m = dot / (float)C, r = rstd[row];
        for (int c = lane * V; c < C; c += 32 * V) {
            ldv<V>(dy + o + c, g);
            ldv<V>(y + o + c, yy);
            if (acc) ldv<V>(dx + o + c, d);
#pragma unroll
            for (int k = 0; k < V; k++) {
                const float v = r * (g[k] - yy[k] * m);
                d[k] = acc ? d[k] + v : v;
            }
            stv<V>(dx + o + c, d);
        }
    }
}
static void cu_rmsnorm_bwd(pg_act *dx, const pg_act *dy, const pg_act *y, const float *rstd, int N, int C,
                           int accumulate) {
    if (N <= 0) return;
    if (C % 8 == 0 && al16(dx) && al16(dy) && al16(y))
        rmsnorm_bwd_kernel<8><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(dx), CA_(dy), CA_(y), rstd, N, C, accumulate);
    else
        rmsnorm_bwd_kernel<1><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(dx), CA_(dy), CA_(y), rstd, N, C, accumulate);
    CU_LAUNCHED();
}

/* xm = mix0*x + mix1*x0 (stored bf16), y = rmsnorm(xm) computed from the stored (rounded) xm */
template <int V>
__global__ void __launch_bounds__(T256) mix_norm_fwd_kernel(bf16 *xm, bf16 *y, float *rstd, const bf16 *x,
                                                            const bf16 *x0, const float *mix, int N, int C) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < N;
         row += (long)gridDim.x * ROWS_PER_BLOCK) {
        const size_t o = (size_t)row * C;
        float a[V], b[V], ss = 0.0f;
        for (int c = lane * V; c < C; c += 32 * V) {
            ldv<V>(x + o + c, a);
            ldv<V>(x0 + o + c, b);
#pragma unroll
            for (int k = 0; k < V; k++) {
                a[k] = bf(f2bf(mix[c + k] * a[k] + mix[C + c + k] * b[k]));
                ss += a[k] * a[k];
            }
            stv<V>(xm + o + c, a); /* exact: a[k] already holds bf16 values */
        }
        ss = warp_sum(ss);
        const float r = 1.0f / sqrtf(ss / (float)C + FLT_EPSILON);
        if (lane == 0) rstd[row] = r;
        for (int c = lane * V; c < C; c += 32 * V) { /* this lane's own xm elements, written above */
            ldv<V>(xm + o + c, a);
#pragma unroll
            for (int k = 0; k < V; k++) a[k] *= r;
            stv<V>(y + o + c, a);
        }
    }
}
static void cu_mix_norm_fwd(pg_act *xm, pg_act *y, float *rstd, const pg_act *x, const pg_act *x0, const float *mix,
                            int N, int C) {
    if (N <= 0) return;
    if (C % 8 == 0 && al16(xm) && al16(y) && al16(x) && al16(x0))
        mix_norm_fwd_kernel<8><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(xm), A_(y), rstd, CA_(x), CA_(x0), mix, N, C);
    else
        mix_norm_fwd_kernel<1><<<row_blocks(N), T256, 0, pg_cu_stream>>>(A_(xm), A_(y), rstd, CA_(x), CA_(x0), mix, N, C);
    CU_LAUNCHED();
}

/* dx = mix0*dxm (dx may alias dxm: each element is read, then written, by one thread);
 * dx0 += mix1*dxm; dmix[0] += sum dxm*x, dmix[1] += sum dxm*x0 */
struct MixBwdOp {
    bf16 *dx, *dx0;
    const bf16 *dxm, *x, *x0;
    const float *mix;
    int C;
    __device__ void operator()(long n, int c, float *acc) const {
        const size_t i = (size_t)n * C + c;
        const float g = bf(dxm[i]);
        acc[0] += g * bf(x[i]);
        acc[1] += g * bf(x0[i]);
        dx0[i] = f2bf(bf(dx0[i]) + mix[C + c] * g);
        dx[i] = f2bf(mix[c] * g);
    }
};
static void cu_mix_bwd(pg_act *dx, pg_act *dx0, float *dmix, const pg_act *dxm, const pg_act *x, const pg_act *x0,
                       const float *mix, int N, int C) {
    MixBwdOp op = {A_(dx), A_(dx0), CA_(dxm), CA_(x), CA_(x0), mix, C};
    colred<2>(op, N, C, dmix, C);
}

/* ---- residuals ---- */
/* y = x + scale[c]*a, c = i % C (C == 1: one scale for all) */
struct ResidFwdOp {
    bf16 *y;
    const bf16 *x, *a;
    const float *scale;
    int C;
    template <int V> __device__ void run(size_t i) const {
        float xf[V], af[V];
        ldv<V>(x + i, xf);
        ldv<V>(a + i, af);
        const int c = C == 1 ? 0 : (int)(i % C);
#pragma unroll
        for (int k = 0; k < V; k++) xf[k] = xf[k] + scale[C == 1 ? 0 : c + k] * af[k];
        stv<V>(y + i, xf);
    }
};
static void cu_resid_fwd(pg_act *y, const pg_act *x, const pg_act *a, const float *scale, int N, int C) {
    ResidFwdOp op = {A_(y), CA_(x), CA_(a), scale, C};
    ew_launch(op, (size_t)N * C, (C == 1 || C % 8 == 0) && al16(y) && al16(x) && al16(a));
}

/* da (+)= scale*dy; dscale += sum dy*a */
struct ResidBwdOp {
    bf16 *da;
    const bf16 *dy, *a;
    const float *scale;
    int C, acc_da;
    __device__ void operator()(long n, int c, float *acc) const {
        const size_t i = (size_t)n * C + c;
        const float g = bf(dy[i]);
        acc[0] += g * bf(a[i]);
        const float v = scale[c] * g;
        da[i] = f2bf(acc_da ? bf(da[i]) + v : v);
    }
};
static void cu_resid_bwd(pg_act *da, float *dscale, const pg_act *dy, const pg_act *a, const float *scale, int N, int C,
                         int accumulate_da) {
    ResidBwdOp op = {A_(da), CA_(dy), CA_(a), scale, C, accumulate_da};
    colred<1>(op, N, C, dscale, 0);
}

/* ---- activations ---- */
struct Relu2FwdOp {
    bf16 *u;
    const bf16 *h;
    template <int V> __device__ void run(size_t i) const {
        float f[V];
        ldv<V>(h + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float r = f[k] > 0.0f ? f[k] : 0.0f;
            f[k] = r * r;
        }
        stv<V>(u + i, f);
    }
};
static void cu_relu2_fwd(pg_act *u, const pg_act *h, size_t n) {
    Relu2FwdOp op = {A_(u), CA_(h)};
    ew_launch(op, n, al16(u) && al16(h));
}
/* dh = du * 2*relu(h); dh may alias du (same element, same thread) */
struct Relu2BwdOp {
    bf16 *dh;
    const bf16 *du, *h;
    template <int V> __device__ void run(size_t i) const {
        float g[V], f[V];
        ldv<V>(du + i, g);
        ldv<V>(h + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float r = f[k] > 0.0f ? f[k] : 0.0f;
            g[k] = g[k] * 2.0f * r;
        }
        stv<V>(dh + i, g);
    }
};
static void cu_relu2_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n) {
    Relu2BwdOp op = {A_(dh), CA_(du), CA_(h)};
    ew_launch(op, n, al16(dh) && al16(du) && al16(h));
}

struct ActScaleOp {
    bf16 *x;
    float s;
    template <int V> __device__ void run(size_t i) const {
        float f[V];
        ldv<V>(x + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) f[k] *= s;
        stv<V>(x + i, f);
    }
};
static void cu_act_scale(pg_act *x, size_t n, float s) {
    ActScaleOp op = {A_(x), s};
    ew_launch(op, n, al16(x));
}

struct AddInplaceOp {
    bf16 *dx;
    const bf16 *dy;
    template <int V> __device__ void run(size_t i) const {
        float a[V], b[V];
        ldv<V>(dx + i, a);
        ldv<V>(dy + i, b);
#pragma unroll
        for (int k = 0; k < V; k++) a[k] += b[k];
        stv<V>(dx + i, a);
    }
};
static void cu_add_inplace(pg_act *dx, const pg_act *dy, size_t n) {
    AddInplaceOp op = {A_(dx), CA_(dy)};
    ew_launch(op, n, al16(dx) && al16(dy));
}

/* ---- q/k preparation: per (token, head) row of D, one warp; the normalised row staged in
 * shared memory (fp32) for the rotate-half pairs ---- */
#define QK_WARPS 4
__global__ void __launch_bounds__(QK_WARPS * 32) qk_fwd_kernel(bf16 *out, float *rstd, const bf16 *raw,
                                                               const float *gain, const float *cs, const float *sn,
                                                               long rows, int T, int nh, int D, int rd) {
    extern __shared__ float qk_sm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, half = rd / 2;
    float *xn = qk_sm + (size_t)warp * D;
    for (long row = (long)blockIdx.x * QK_WARPS + warp; row < rows; row += (long)gridDim.x * QK_WARPS) {
        const long n = row / nh;
        const int h = (int)(row % nh), t = (int)(n % T);
        const bf16 *x = raw + (size_t)row * D;
        float ss = 0.0f;
        for (int d = lane; d < D; d += 32) {
            const float v = bf(x[d]);
            ss += v * v;
        }
        ss = warp_sum(ss);
        const float r = 1.0f / sqrtf(ss / (float)D + FLT_EPSILON);
        if (lane == 0) rstd[row] = r;
        for (int d = lane; d < D; d += 32) xn[d] = bf(x[d]) * r;
        __syncwarp();
        const float *c_ = cs + (size_t)t * half, *s_ = sn + (size_t)t * half;
        const float g = gain ? gain[h] : 1.0f;
        for (int d = lane; d < D; d += 32) {
            float o;
            if (d < half) o = xn[d] * c_[d] + xn[d + half] * s_[d];
            else if (d < rd) o = -xn[d - half] * s_[d - half] + xn[d] * c_[d - half];
            else o = xn[d];
            if (gain) o *= g;
            out[(size_t)row * D + d] = f2bf(o);
        }
        __syncwarp(); /* xn is rewritten for the next row */
    }
}

/* rowdot[row] = sum_d g*rope(xn) (the row's dgain contribution; only when gain) */
__global__ void __launch_bounds__(QK_WARPS * 32) qk_bwd_kernel(bf16 *draw, float *rowdot, const bf16 *dout,
                                                               const bf16 *raw, const float *rstd, const float *gain,
                                                               const float *cs, const float *sn, long rows, int T,
                                                               int nh, int D, int rd) {
    extern __shared__ float qk_sm[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, half = rd / 2;
    float *xn = qk_sm + (size_t)warp * 2 * D, *gr = xn + D;
    for (long row = (long)blockIdx.x * QK_WARPS + warp; row < rows; row += (long)gridDim.x * QK_WARPS) {
        const long n = row / nh;
        const int h = (int)(row % nh), t = (int)(n % T);
        const size_t off = (size_t)row * D;
        const float r = rstd[row], gh = gain ? gain[h] : 1.0f;
        for (int d = lane; d < D; d += 32) {
            xn[d] = bf(raw[off + d]) * r;
            gr[d] = bf(dout[off + d]) * gh;
        }
        __syncwarp();
        const float *c_ = cs + (size_t)t * half, *s_ = sn + (size_t)t * half;
        if (gain && rowdot) { /* d gain = sum g * rope(xn) */
            float s = 0.0f;
            for (int d = lane; d < D; d += 32) {
                float rot;
                if (d < half) rot = xn[d] * c_[d] + xn[d + half] * s_[d];
                else if (d < rd) rot = -xn[d - half] * s_[d - half] + xn[d] * c_[d - half];
                else rot = xn[d];
                s += bf(dout[off + d]) * rot;
            }
            s = warp_sum(s);
            if (lane == 0) rowdot[row] = s;
        }
        /* dn = rope^T(gr); then the rmsnorm backward with y = xn */
        float dot = 0.0f;
        for (int d = lane; d < D; d += 32) {
            float dn;
            if (d < half) dn = gr[d] * c_[d] - gr[d + half] * s_[d];
            else if (d < rd) dn = gr[d - half] * s_[d - half] + gr[d] * c_[d - half];
            else dn = gr[d];
            dot += dn * xn[d];
        }
        dot = warp_sum(dot);
        const float m = dot / (float)D;
        for (int d = lane; d < D; d += 32) {
            float dn;
            if (d < half) dn = gr[d] * c_[d] - gr[d + half] * s_[d];
            else if (d < rd) dn = gr[d - half] * s_[d - half] + gr[d] * c_[d - half];
            else dn = gr[d];
            draw[off + d] = f2bf(r * (dn - xn[d] * m));
        }
        __syncwarp();
    }
}

static unsigned qk_blocks(long rows) { return pg_cu_blocks((size_t)rows, QK_WARPS); }

static void cu_qk_prep_fwd(pg_act *q, pg_act *k, float *rstd_q, float *rstd_k, const pg_act *q_raw,
                           const pg_act *k_raw, const float *gain, const float *cos, const float *sin, int N, int T,
                           int H, int Hk, int D, int rope_dims) {
    if (N <= 0) return;
    PG_CHECK(D <= 1024 && rope_dims <= D && rope_dims % 2 == 0); /* shared memory: 32 KB at most */
    const size_t smem = (size_t)QK_WARPS * D * sizeof(float);
    const long rq = (long)N * H, rk = (long)N * Hk;
    qk_fwd_kernel<<<qk_blocks(rq), QK_WARPS * 32, smem, pg_cu_stream>>>(A_(q), rstd_q, CA_(q_raw), gain, cos, sin, rq,
                                                                       T, H, D, rope_dims);
    CU_LAUNCHED();
    qk_fwd_kernel<<<qk_blocks(rk), QK_WARPS * 32, smem, pg_cu_stream>>>(A_(k), rstd_k, CA_(k_raw), NULL, cos, sin, rk,
                                                                       T, Hk, D, rope_dims);
    CU_LAUNCHED();
}

static void cu_qk_prep_bwd(pg_act *dq_raw, pg_act *dk_raw, float *dgain, const pg_act *dq, const pg_act *dk,
                           const pg_act *q_raw, const pg_act *k_raw, const float *rstd_q, const float *rstd_k,
                           const float *gain, const float *cos, const float *sin, int N, int T, int H, int Hk, int D,
                           int rope_dims) {
    if (N <= 0) return;
    PG_CHECK(D <= 1024 && rope_dims <= D && rope_dims % 2 == 0); /* shared memory: 32 KB at most */
    const size_t smem = (size_t)QK_WARPS * 2 * D * sizeof(float);
    const long rq = (long)N * H, rk = (long)N * Hk;
    float *rowdot = gain && dgain ? scratch((size_t)rq) : NULL;
    qk_bwd_kernel<<<qk_blocks(rq), QK_WARPS * 32, smem, pg_cu_stream>>>(A_(dq_raw), rowdot, CA_(dq), CA_(q_raw), rstd_q,
                                                                       gain, cos, sin, rq, T, H, D, rope_dims);
    CU_LAUNCHED();
    if (rowdot) colred_finish(rowdot, N, 1, H, dgain, 0); /* dgain[h] += sum_n rowdot[n*H + h] */
    qk_bwd_kernel<<<qk_blocks(rk), QK_WARPS * 32, smem, pg_cu_stream>>>(A_(dk_raw), NULL, CA_(dk), CA_(k_raw), rstd_k,
                                                                       NULL, cos, sin, rk, T, Hk, D, rope_dims);
    CU_LAUNCHED();
}

/* ---- softcap + cross entropy: one block per row ---- */
#define CE_THREADS 512
__device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    if (m2 == -INFINITY) return;
    if (m == -INFINITY) {
        m = m2;
        s = s2;
        return;
    }
    const float M = fmaxf(m, m2);
    s = s * expf(m - M) + s2 * expf(m2 - M);
    m = M;
}

__global__ void __launch_bounds__(CE_THREADS) softcap_ce_kernel(float *losses, bf16 *z, const int32_t *targets, int N,
                                                                int V, float cap, float gs) {
    __shared__ float sm_m[CE_THREADS / 32], sm_s[CE_THREADS / 32];
    __shared__ float sh_lse;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (long row = blockIdx.x; row < N; row += gridDim.x) {
        bf16 *zr = z + (size_t)row * V;
        const int y = targets[row];
        float m = -INFINITY, s = 0.0f;
        for (int v = tid; v < V; v += CE_THREADS) {
            const float l = cap * tanhf(bf(zr[v]) / cap);
            if (l > m) {
                s = s * expf(m - l) + 1.0f;
                m = l;
            } else
                s += expf(l - m);
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            lse_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            sm_m[warp] = m;
            sm_s[warp] = s;
        }
        __syncthreads();
        if (tid == 0) {
            float M = sm_m[0], S = sm_s[0];
            for (int w = 1; w < CE_THREADS / 32; w++) lse_merge(M, S, sm_m[w], sm_s[w]);
            const float lse = M + logf(S);
            losses[row] = lse - cap * tanhf(bf(zr[y]) / cap);
            sh_lse = lse;
        }
        __syncthreads(); /* sh_lse ready; z[y] read before any thread overwrites z */
        const float lse = sh_lse;
        for (int v = tid; v < V; v += CE_THREADS) {
            const float l = cap * tanhf(bf(zr[v]) / cap);
            if (gs != 0.0f) {
                const float p = expf(l - lse);
                const float dl = p - (v == y ? 1.0f : 0.0f);
                const float th = l / cap;
                zr[v] = f2bf(dl * (1.0f - th * th) * gs);
            } else
                zr[v] = f2bf(l); /* the softcapped logits, as the CPU op leaves them (eval reads them) */
        }
        __syncthreads(); /* sm_*, sh_lse reused by the next row */
    }
}
static void cu_softcap_ce(float *losses, pg_act *z, const int32_t *targets, int N, int V, float softcap,
                          float grad_scale) {
    if (N <= 0) return;
    const unsigned grid = (unsigned)(N < 65535 * 16 ? N : 65535 * 16);
    softcap_ce_kernel<<<grid, CE_THREADS, 0, pg_cu_stream>>>(losses, A_(z), targets, N, V, softcap, grad_scale);
    CU_LAUNCHED();
}

/* ---- optimizers ---- */
/* The CPU op's arithmetic with each rounding explicit (no fused multiply-adds): bit-identical. */
__global__ void __launch_bounds__(T256) adam_kernel(float *p, const float *g, float *m, float *v, size_t n, float step,
                                                    float bc2s, float eps, float b1, float omb1, float b2, float omb2,
                                                    int wd_on, float wdf) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float gi = g[i];
        float pi = p[i];
        if (wd_on) pi = __fmul_rn(pi, wdf);
        const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(omb1, gi));
        const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(omb2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        p[i] = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step, mi), __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2s), eps)));
    }
}
static void cu_adam_step(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1, float beta2,
                         float eps, float bc1, float bc2, float wd) {
    if (!n) return;
    const float step = lr / bc1, bc2s = sqrtf(bc2), wdf = 1.0f - lr * wd;
    adam_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(p, g, m, v, n, step, bc2s, eps, beta1, 1.0f - beta1,
                                                                  beta2, 1.0f - beta2, wd != 0.0f, wdf);
    CU_LAUNCHED();
}

/* sum of squares in double: SS_BLOCKS fixed partials, then one block (deterministic) */
__global__ void __launch_bounds__(T256) sumsq_partial_kernel(const float *x, size_t n, double *part) {
    __shared__ double sm[T256];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * (double)x[i];
    sm[threadIdx.x] = s;
    __syncthreads();
    for (int h = T256 / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) sm[threadIdx.x] += sm[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = sm[0];
}
__global__ void __launch_bounds__(T256) sumsq_final_kernel(const double *part, int nb, double *out) {
    __shared__ double sm[T256];
    sm[threadIdx.x] = (int)threadIdx.x < nb ? part[threadIdx.x] : 0.0;
    __syncthreads();
    for (int h = T256 / 2; h > 0; h >>= 1) {
        if ((int)threadIdx.x < h) sm[threadIdx.x] += sm[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = sm[0];
}
/* the sum of squares of x (n floats) into the device double *out, no host synchronisation */
static void sumsq_device(const float *x, size_t n, double *out) {
    if (!g_ss_part) g_ss_part = (double *)dev_alloc((SS_BLOCKS + 1) * sizeof(double));
    const int nb = SS_BLOCKS; /* fixed: the result does not depend on n's size class */
    sumsq_partial_kernel<<<nb, T256, 0, pg_cu_stream>>>(x, n, g_ss_part);
    CU_LAUNCHED();
    sumsq_final_kernel<<<1, T256, 0, pg_cu_stream>>>(g_ss_part, nb, out);
    CU_LAUNCHED();
}
static double cu_sum_squares(const float *x, size_t n) {
    pg_cu_init();
    if (!g_ss_part) g_ss_part = (double *)dev_alloc((SS_BLOCKS + 1) * sizeof(double));
    sumsq_device(x, n, g_ss_part + SS_BLOCKS);
    double r = 0;
    cu_to_host(&r, g_ss_part + SS_BLOCKS, sizeof(double));
    return r;
}
/* each span's sum into its own device double, then one copy back */
static double *g_ss_spans;
static int g_ss_spans_n;
static void cu_sum_squares_spans(const float *x, const size_t *off, const size_t *n, int k, double *out) {
    pg_cu_init();
    if (k <= 0) return;
    if (k > g_ss_spans_n) {
        if (g_ss_spans) dev_free(g_ss_spans);
        g_ss_spans_n = k;
        g_ss_spans = (double *)dev_alloc((size_t)k * sizeof(double));
    }
    for (int i = 0; i < k; i++) sumsq_device(x + off[i], n[i], g_ss_spans + i);
    cu_to_host(out, g_ss_spans, (size_t)k * sizeof(double));
}

__global__ void __launch_bounds__(T256) scale_kernel(float *x, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = x[i] * s;
}
static void cu_scale_inplace(float *x, size_t n, float s) {
    if (!n) return;
    scale_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(x, n, s);
    CU_LAUNCHED();
}

/* e = e*decay; e = e + (1-decay)*w: two fp32 roundings (plus the product's), as torch's mul_/add_ */
__global__ void __launch_bounds__(T256) ema_kernel(float *e, const float *w, size_t n, float decay, float a) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        e[i] = __fadd_rn(__fmul_rn(e[i], decay), __fmul_rn(a, w[i]));
}
static void cu_ema_update(float *e, const float *w, size_t n, float decay) {
    if (!n) return;
    ema_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(e, w, n, decay, 1.0f - decay);
    CU_LAUNCHED();
}

__global__ void __launch_bounds__(T256) add_f32_kernel(float *y, const float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = y[i] + x[i];
}
static void cu_add_f32(float *y, const float *x, size_t n) {
    if (!n) return;
    add_f32_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(y, x, n);
    CU_LAUNCHED();
}

/* ---- Muon ----
 * work layout (floats): [0, 64) the Frobenius sum of squares (a double at work[0]); then
 * X (r*c), Xn (r*c; first holds U, the Nesterov direction in W's (rows, cols) layout), A, A2, Bm
 * (r*r each), every region starting on a 64-float boundary. r = min(rows, cols), c = max. */
static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }
static size_t cu_muon_work_floats(int rows, int cols) {
    const size_t r = (size_t)(rows < cols ? rows : cols), c = (size_t)(rows < cols ? cols : rows);
    return 64 + 2 * al64(r * c) + 3 * al64(r * r);
}

/* buf = mu*buf + g; U = g + mu*buf */
__global__ void __launch_bounds__(T256) muon_mom_kernel(float *buf, const float *g, float *U, size_t n, float mu) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float b = __fadd_rn(__fmul_rn(mu, buf[i]), g[i]);
        buf[i] = b;
        U[i] = __fadd_rn(g[i], __fmul_rn(mu, b));
    }
}
/* MuonEq-R: each row of U (rows, cols) divided by sqrt(sum_c u^2 + 1e-7); one warp per row */
__global__ void __launch_bounds__(T256) muon_rownorm_kernel(float *U, int rows, int cols) {
    const int lane = threadIdx.x & 31;
    for (long row = (long)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < rows;
         row += (long)gridDim.x * ROWS_PER_BLOCK) {
        float *u = U + (size_t)row * cols;
        float s = 0.0f;
        for (int j = lane; j < cols; j += 32) s += u[j] * u[j];
        s = warp_sum(s);
        const float inv = 1.0f / sqrtf(s + 1e-7f);
        for (int j = lane; j < cols; j += 32) u[j] = u[j] * inv;
    }
}
/* X (r, c) = U scaled by 1/(|U|_F + 1e-7), transposed when rows > cols */
__global__ void __launch_bounds__(T256) muon_load_kernel(float *X, const float *U, const double *ss, int rows, int cols,
                                                         int tr) {
    const float inv = (float)(1.0 / (sqrt(*ss) + 1e-7));
    const size_t n = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t j = tr ? (i % cols) * rows + i / cols : i;
        X[j] = U[i] * inv;
    }
}
/* Bm = b*A + c*A2 */
__global__ void __launch_bounds__(T256) ns_comb_kernel(float *Bm, const float *A, const float *A2, size_t n, float b,
                                                       float c) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        Bm[i] = __fadd_rn(__fmul_rn(b, A[i]), __fmul_rn(c, A2[i]));
}
/* W = W*(1 - lr*wd) (wd_on); W -= (lr*sc) * X (read transposed when rows > cols) */
__global__ void __launch_bounds__(T256) muon_apply_kernel(float *W, const float *X, int rows, int cols, int tr,
                                                          int wd_on, float wdf, float lrsc) {
    const size_t n = (size_t)rows * cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = tr ? X[(i % cols) * rows + i / cols] : X[i];
        float w = W[i];
        if (wd_on) w = __fmul_rn(w, wdf);
        W[i] = __fsub_rn(w, __fmul_rn(lrsc, x));
    }
}

/* Newton-Schulz 5 on row-major X (r, c), r <= c, as the CPU's ns5: A = X X^T; A2 = A A;
 * Bm = b A + c A2; X = a X + Bm X. cuBLAS is column-major: row-major X is the column-major
 * matrix Xc = X^T (c x r, ld c), so
 *   A  = Xc^T Xc            gemm(T, N, m=r, n=r, k=c, Xc (ld c), Xc (ld c)) -> A (ld r), symmetric;
 *   A2 = A A                gemm(N, N, r, r, r) (A symmetric: its layout does not matter);
 *   (Bm X)^T = Xc Bm^T      gemm(N, N, m=c, n=r, k=r, Xn (ld c), Bm (ld r; row-major Bm read
 *                           column-major is Bm^T)) with beta = a onto X (ld c), Xn a copy of X. */
/* The GEMMs' compute type: true fp32 (the CPU op's arithmetic, what tests/test_cuda.c's 1e-3
 * tolerance assumes). CUBLAS_COMPUTE_32F_FAST_TF32 would be several times faster and still more
 * precise than the records' bf16 Newton-Schulz (a measured choice for a GPU session). */
#ifndef PG_MUON_COMPUTE
#define PG_MUON_COMPUTE CUBLAS_COMPUTE_32F
#endif
static void sgemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    const float one = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(pg_cu_blas, ta, tb, m, n, k, &one, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, &beta, C,
                              CUDA_R_32F, ldc, PG_MUON_COMPUTE, CUBLAS_GEMM_DEFAULT));
}
static void ns5_gpu(float *X, float *Xn, float *A, float *A2, float *Bm, int r, int c, int steps) {
    const float a = 3.4445f, b = -4.7750f, cc = 2.0315f;
    const size_t rr = (size_t)r * r, rc = (size_t)r * c;
    for (int it = 0; it < steps; it++) {
        sgemm(CUBLAS_OP_T, CUBLAS_OP_N, r, r, c, X, c, X, c, 0.0f, A, r);
        sgemm(CUBLAS_OP_N, CUBLAS_OP_N, r, r, r, A, r, A, r, 0.0f, A2, r);
        ns_comb_kernel<<<pg_cu_blocks(rr, T256), T256, 0, pg_cu_stream>>>(Bm, A, A2, rr, b, cc);
        CU_LAUNCHED();
        CU_CHECK(cudaMemcpyAsync(Xn, X, rc * sizeof(float), cudaMemcpyDeviceToDevice, pg_cu_stream));
        sgemm(CUBLAS_OP_N, CUBLAS_OP_N, c, r, r, Xn, c, Bm, r, a, X, c);
    }
}

static void cu_muon_step(float *W, const float *g, float *buf, int rows, int cols, float lr, float mu, int steps,
                         float wd, int eq_r, float *work) {
    if (rows <= 0 || cols <= 0) return;
    const size_t n = (size_t)rows * cols;
    const int tr = rows > cols, r = tr ? cols : rows, c = tr ? rows : cols;
    double *ss = (double *)work;
    float *X = work + 64, *Xn = X + al64(n), *A = Xn + al64(n), *A2 = A + al64((size_t)r * r),
          *Bm = A2 + al64((size_t)r * r);
    float *U = Xn;
    muon_mom_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(buf, g, U, n, mu);
    CU_LAUNCHED();
    if (eq_r) {
        muon_rownorm_kernel<<<row_blocks(rows), T256, 0, pg_cu_stream>>>(U, rows, cols);
        CU_LAUNCHED();
    }
    sumsq_device(U, n, ss);
    muon_load_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(X, U, ss, rows, cols, tr);
    CU_LAUNCHED();
    ns5_gpu(X, Xn, A, A2, Bm, r, c, steps);
    const float sc = sqrtf(fmaxf(1.0f, (float)rows / (float)cols));
    muon_apply_kernel<<<pg_cu_blocks(n, T256), T256, 0, pg_cu_stream>>>(W, X, rows, cols, tr, wd != 0.0f, 1.0f - lr * wd,
                                                                        lr * sc);
    CU_LAUNCHED();
}

/* ---- the table ---- */
extern "C" const pg_ops pg_cuda_ops = {
    /* name */ "cuda",
    /* act_bytes */ 2,
    /* wc_bytes */ 2,
    cu_alloc,
    cu_free,
    cu_zero,
    cu_to_device,
    cu_to_host,
    cu_copy_rows,
    cu_sync,
    cu_peak,
    cu_weights_to_compute,
    cu_act_from_f32,
    cu_act_to_f32,
    cu_embed_fwd,
    cu_embed_bwd,
    cu_rmsnorm_fwd,
    cu_rmsnorm_bwd,
    cu_mix_norm_fwd,
    cu_mix_bwd,
    cu_matmul_fwd,
    cu_matmul_bwd,
    cu_qk_prep_fwd,
    cu_qk_prep_bwd,
    cu_attn_fwd,
    cu_attn_bwd,
    cu_attn_decode,
    cu_resid_fwd,
    cu_resid_bwd,
    cu_relu2_fwd,
    cu_relu2_bwd,
    cu_smear_fwd,
    cu_smear_bwd,
    cu_xsa_fwd,
    cu_xsa_bwd,
    cu_act_scale,
    cu_leaky_relu2_fwd,
    cu_leaky_relu2_bwd,
    cu_lerp_fwd,
    cu_lerp_bwd,
    cu_gelu_fwd,
    cu_gelu_bwd,
    cu_lane_route_fwd,
    cu_lane_route_bwd,
    cu_fake_quant_rows,
    cu_add_inplace,
    cu_softcap_ce,
    cu_adam_step,
    cu_muon_step,
    cu_muon_work_floats,
    cu_sum_squares,
    cu_sum_squares_spans,
    cu_scale_inplace,
    cu_ema_update,
    cu_add_f32,
};
