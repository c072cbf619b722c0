/* ops_records.cu: the record techniques of src/ops.h on the GPU (SmearGate, XSA, LeakyReLU^2, the
 * damped-recurrence lerp, GELU, PR #1289's lane update, int6 STE fake quantisation). Activations
 * bf16, arithmetic fp32. Parameter-gradient reductions over tokens are deterministic: each block of
 * the first pass sums a fixed chunk of rows (in a fixed order) into a partial buffer, a second pass
 * adds the chunks in order; no float atomics. The elementwise parts of a backward run fused into
 * the first pass, each thread reading an element before it writes the outputs of that element, so
 * the aliasing ops.h allows (lerp's dy = dout, xsa's do_ = dy, ...) is safe.
 * fake_quant_rows reproduces the CPU backend bit for bit: IEEE fp32 divisions and products written
 * as __fdiv_rn/__fmul_rn (no FMA contraction), rintf (half to even), the quantile of mode 1 by an
 * exact radix select of the bf16-rounded |w| (torch.quantile's rank and lerp, as quant_quantile). */
#include "cuda_common.cuh"

extern "C" {
#include "../quant.h"
}

#define RT 256 /* threads per block of the elementwise kernels */

__device__ __forceinline__ float ldf(const bf16 *p, long i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void stf(bf16 *p, long i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

#define GRID_STRIDE(i, n) for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* ---------------------------------------------------------------- deterministic column sums */
/* the partial buffer (chunks * K * C floats), grown stream-ordered */
static float *g_part;
static size_t g_part_cap;
static float *part_scratch(size_t n) {
    if (n > g_part_cap) {
        if (g_part) CU_CHECK(cudaFreeAsync(g_part, pg_cu_stream));
        CU_CHECK(cudaMallocAsync((void **)&g_part, n * sizeof(float), pg_cu_stream));
        g_part_cap = n;
    }
    return g_part;
}

/* the chunking of N rows: a function of N only (results do not depend on the GPU) */
static void chunks_of(int N, int *nch, int *rpc) {
    int n = (N + 63) / 64;
    if (n > 256) n = 256;
    if (n < 1) n = 1;
    *rpc = (N + n - 1) / n;
    *nch = (N + *rpc - 1) / *rpc;
    if (*nch < 1) *nch = 1;
}

/* part[(chunk*K + k)*C + c] = sum over the chunk's rows n of f(n, c)[k], in a fixed order. f may
 * also write per-element outputs. C >= 32: blocks of 32 columns x 8 row lanes, grid (ceil(C/32),
 * chunks); C < 32: grid (1, chunks), each column reduced over the block in turn. */
template <int K, class F>
__global__ void __launch_bounds__(256) colsum_part_k(float *__restrict__ part, int N, int C, int rpc, F f) {
    const int chunk = blockIdx.y;
    const long n0 = (long)chunk * rpc, n1 = n0 + rpc < N ? n0 + rpc : N;
    if (C >= 32) {
        __shared__ float red[K][8][33];
        const int cx = threadIdx.x & 31, ry = threadIdx.x >> 5, c = blockIdx.x * 32 + cx;
        float acc[K];
#pragma unroll
        for (int k = 0; k < K; k++) acc[k] = 0.0f;
        if (c < C)
            for (long n = n0 + ry; n < n1; n += 8) {
                float v[K];
                f(n, c, v);
#pragma unroll
                for (int k = 0; k < K; k++) acc[k] += v[k];
            }
#pragma unroll
        for (int k = 0; k < K; k++) red[k][ry][cx] = acc[k];
        __syncthreads();
        if (ry == 0 && c < C)
#pragma unroll
            for (int k = 0; k < K; k++) {
                float s = 0.0f;
                for (int j = 0; j < 8; j++) s += red[k][j][cx];
                part[((long)chunk * K + k) * C + c] = s;
            }
    } else {
        __shared__ float red2[K][256];
        for (int c = 0; c < C; c++) {
            float acc[K];
#pragma unroll
            for (int k = 0; k < K; k++) acc[k] = 0.0f;
            for (long n = n0 + threadIdx.x; n < n1; n += blockDim.x) {
                float v[K];
                f(n, c, v);
#pragma unroll
                for (int k = 0; k < K; k++) acc[k] += v[k];
            }
#pragma unroll
            for (int k = 0; k < K; k++) red2[k][threadIdx.x] = acc[k];
            __syncthreads();
            for (int s = 128; s > 0; s >>= 1) {
                if ((int)threadIdx.x < s)
#pragma unroll
                    for (int k = 0; k < K; k++) red2[k][threadIdx.x] += red2[k][threadIdx.x + s];
                __syncthreads();
            }
            if (threadIdx.x == 0)
#pragma unroll
                for (int k = 0; k < K; k++) part[((long)chunk * K + k) * C + c] = red2[k][0];
            __syncthreads();
        }
    }
}

template <int K, class F>
static void colsum_part(float *part, int N, int C, int nch, int rpc, F f) {
    dim3 grid(C >= 32 ? (unsigned)((C + 31) / 32) : 1u, (unsigned)nch);
    colsum_part_k<K, F><<<grid, 256, 0, pg_cu_stream>>>(part, N, C, rpc, f);
    CU_LAUNCHED();
}

/* out[c] += post(c, sum over chunks of part[chunk*C + c]) (K = 1) */
template <class P>
__global__ void colsum_fin_k(const float *__restrict__ part, int nch, int C, P post) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int j = 0; j < nch; j++) s += part[(long)j * C + c];
        post(c, s);
    }
}

template <class P>
static void colsum_fin(const float *part, int nch, int C, P post) {
    colsum_fin_k<P><<<pg_cu_blocks((size_t)C, RT), RT, 0, pg_cu_stream>>>(part, nch, C, post);
    CU_LAUNCHED();
}

/* ---------------------------------------------------------------- SmearGate */
__global__ void smear_fwd_k(bf16 *__restrict__ y, const bf16 *__restrict__ x, const float *__restrict__ gate, int N,
                            int T, int C, int reverse) {
    const size_t n_el = (size_t)N * C;
    GRID_STRIDE(i, n_el) {
        const long n = (long)(i / C);
        const int c = (int)(i % C);
        const float g = sigm(gate[c]), a = reverse ? 1.0f - g : g;
        float r = a * ldf(x, (long)i);
        if (n % T) r += (1.0f - a) * ldf(x, (long)i - C);
        stf(y, (long)i, r);
    }
}

void cu_smear_fwd(pg_act *y, const pg_act *x, const float *gate, int N, int T, int C, int reverse) {
    if ((size_t)N * C == 0) return;
    smear_fwd_k<<<pg_cu_blocks((size_t)N * C, RT), RT, 0, pg_cu_stream>>>((bf16 *)y, (const bf16 *)x, gate, N, T, C,
                                                                        reverse);
    CU_LAUNCHED();
}

struct SmearBwdF {
    bf16 *dx;
    const bf16 *dy, *x;
    const float *gate;
    int T, C, reverse;
    __device__ void operator()(long n, int c, float *v) const {
        const long i = n * C + c;
        const float g = sigm(gate[c]), a = reverse ? 1.0f - g : g;
        const float gy = ldf(dy, i);
        float d = a * gy;
        if ((n + 1) % T) d += (1.0f - a) * ldf(dy, i + C);
        stf(dx, i, d);
        v[0] = gy * (ldf(x, i) - (n % T ? ldf(x, i - C) : 0.0f));
    }
};
struct SmearBwdPost {
    float *dgate;
    const float *gate;
    int reverse;
    __device__ void operator()(int c, float s) const {
        const float g = sigm(gate[c]);
        dgate[c] += s * g * (1.0f - g) * (reverse ? -1.0f : 1.0f);
    }
};

void cu_smear_bwd(pg_act *dx, float *dgate, const pg_act *dy, const pg_act *x, const float *gate, int N, int T, int C,
                  int reverse) {
    if (N <= 0 || C <= 0) return;
    int nch, rpc;
    chunks_of(N, &nch, &rpc);
    float *part = part_scratch((size_t)nch * C);
    SmearBwdF f = {(bf16 *)dx, (const bf16 *)dy, (const bf16 *)x, gate, T, C, reverse};
    colsum_part<1>(part, N, C, nch, rpc, f);
    SmearBwdPost p = {dgate, gate, reverse};
    colsum_fin(part, nch, C, p);
}

/* ---------------------------------------------------------------- XSA */
__device__ __forceinline__ float warp_sum(float s) {
#pragma unroll
    for (int off = 16; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    return s;
}

/* a warp per (n, h) */
__global__ void xsa_fwd_k(bf16 *y, const bf16 *o, const bf16 *__restrict__ v, long rows, int H, int Hk, int D) {
    const long rw = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (rw >= rows) return;
    const long n = rw / H;
    const int h = (int)(rw % H);
    const bf16 *vr = v + (n * Hk + h / (H / Hk)) * D, *orow = o + rw * D;
    bf16 *yr = y + rw * D;
    float ss = 0.0f, dot = 0.0f;
    for (int d = lane; d < D; d += 32) {
        const float vv = ldf(vr, d);
        ss += vv * vv;
        dot += ldf(orow, d) * vv;
    }
    ss = warp_sum(ss);
    dot = warp_sum(dot);
    const float inv = 1.0f / fmaxf(sqrtf(ss), 1e-12f), c = dot * inv * inv;
    for (int d = lane; d < D; d += 32) stf(yr, d, ldf(orow, d) - c * ldf(vr, d)); /* y may alias o */
}

void cu_xsa_fwd(pg_act *y, const pg_act *o, const pg_act *v, int N, int H, int Hk, int D) {
    const long rows = (long)N * H;
    if (rows <= 0 || D <= 0) return;
    if (Hk <= 0 || H % Hk) pg_die("xsa: %d heads are not a multiple of %d kv heads", H, Hk);
    xsa_fwd_k<<<(unsigned)((rows + 3) / 4), 128, 0, pg_cu_stream>>>((bf16 *)y, (const bf16 *)o, (const bf16 *)v, rows,
                                                                     H, Hk, D);
    CU_LAUNCHED();
}

/* a warp per (n, kv head g); du (D floats per warp) in dynamic shared memory, each lane owning the
 * dims d = lane + 32i */
__global__ void xsa_bwd_k(bf16 *do_, bf16 *__restrict__ dv, const bf16 *dy, const bf16 *__restrict__ o,
                          const bf16 *__restrict__ v, long rows, int H, int Hk, int D) {
    extern __shared__ float xsa_du[];
    const long rw = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31, grp = H / Hk;
    if (rw >= rows) return;
    float *du = xsa_du + (threadIdx.x >> 5) * D;
    const long n = rw / Hk;
    const int g = (int)(rw % Hk);
    const bf16 *vr = v + rw * D;
    float ss = 0.0f;
    for (int d = lane; d < D; d += 32) {
        const float vv = ldf(vr, d);
        ss += vv * vv;
        du[d] = 0.0f;
    }
    ss = warp_sum(ss);
    const float nrm = sqrtf(ss), r = fmaxf(nrm, 1e-12f);
    for (int h = g * grp; h < (g + 1) * grp; h++) {
        const long off = (n * H + h) * D;
        const bf16 *orow = o + off, *dyr = dy + off;
        bf16 *dor = do_ + off;
        float a = 0.0f, b = 0.0f;
        for (int d = lane; d < D; d += 32) {
            const float u = ldf(vr, d) / r;
            a += ldf(orow, d) * u;
            b += ldf(dyr, d) * u;
        }
        a = warp_sum(a); /* every lane has read all of dy's row before any lane writes do_ (may alias) */
        b = warp_sum(b);
        for (int d = lane; d < D; d += 32) {
            const float u = ldf(vr, d) / r, gy = ldf(dyr, d);
            du[d] -= a * gy + b * ldf(orow, d);
            stf(dor, d, gy - b * u);
        }
    }
    float c = 0.0f;
    if (nrm > 1e-12f) {
        for (int d = lane; d < D; d += 32) c += du[d] * (ldf(vr, d) / r);
        c = warp_sum(c);
    }
    bf16 *dvr = dv + rw * D;
    for (int d = lane; d < D; d += 32) stf(dvr, d, (du[d] - c * (ldf(vr, d) / r)) / r);
}

void cu_xsa_bwd(pg_act *do_, pg_act *dv, const pg_act *dy, const pg_act *o, const pg_act *v, int N, int H, int Hk,
                int D) {
    const long rows = (long)N * Hk;
    if (rows <= 0 || D <= 0) return;
    if (Hk <= 0 || H % Hk) pg_die("xsa: %d heads are not a multiple of %d kv heads", H, Hk);
    const size_t smem = 4 * (size_t)D * sizeof(float);
    if (smem > 48 * 1024) pg_die("xsa: head dim %d too large for the CUDA backend", D);
    xsa_bwd_k<<<(unsigned)((rows + 3) / 4), 128, smem, pg_cu_stream>>>((bf16 *)do_, (bf16 *)dv, (const bf16 *)dy,
                                                                        (const bf16 *)o, (const bf16 *)v, rows, H, Hk,
                                                                        D);
    CU_LAUNCHED();
}

/* ---------------------------------------------------------------- elementwise activations */
/* out[i] = f(a[i], b[i]) over n elements; 8 elements per 16-byte access when every pointer is
 * 16-byte aligned (vec), the n % 8 tail and unaligned tensors element by element. out may alias a
 * or b (each element is read before it is written, by the same thread). */
template <class F>
__global__ void ew_k(bf16 *out, const bf16 *a, const bf16 *b, size_t n, int vec, F f) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t done = 0;
    if (vec) {
        const size_t n8 = n / 8;
        for (size_t i = tid; i < n8; i += stride) {
            const uint4 va = reinterpret_cast<const uint4 *>(a)[i];
            const uint4 vb = b ? reinterpret_cast<const uint4 *>(b)[i] : va;
            const __nv_bfloat162 *pa = reinterpret_cast<const __nv_bfloat162 *>(&va);
            const __nv_bfloat162 *pb = reinterpret_cast<const __nv_bfloat162 *>(&vb);
            uint4 vo;
            __nv_bfloat162 *po = reinterpret_cast<__nv_bfloat162 *>(&vo);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float2 x = __bfloat1622float2(pa[j]), y = __bfloat1622float2(pb[j]);
                po[j] = __floats2bfloat162_rn(f(x.x, y.x), f(x.y, y.y));
            }
            reinterpret_cast<uint4 *>(out)[i] = vo;
        }
        done = n8 * 8;
    }
    for (size_t i = done + tid; i < n; i += stride) stf(out, (long)i, f(ldf(a, (long)i), b ? ldf(b, (long)i) : 0.0f));
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

template <class F>
static void ew(pg_act *out, const pg_act *a, const pg_act *b, size_t n, F f) {
    if (!n) return;
    const int vec = aligned16(out) && aligned16(a) && (!b || aligned16(b));
    ew_k<F><<<pg_cu_blocks(vec ? (n + 7) / 8 : n, RT), RT, 0, pg_cu_stream>>>((bf16 *)out, (const bf16 *)a,
                                                                             (const bf16 *)b, n, vec, f);
    CU_LAUNCHED();
}

/* u = leaky_relu(h)^2 */
struct LeakyFwd {
    float slope;
    __device__ float operator()(float x, float) const {
        const float r = x > 0.0f ? x : slope * x;
        return r * r;
    }
};
/* dh = du * 2*r * (h > 0 ? 1 : slope), a = du, b = h */
struct LeakyBwd {
    float slope;
    __device__ float operator()(float du, float x) const {
        const float r = x > 0.0f ? x : slope * x;
        return du * 2.0f * r * (x > 0.0f ? 1.0f : slope);
    }
};
struct GeluFwd {
    __device__ float operator()(float x, float) const { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
};
struct GeluBwd {
    __device__ float operator()(float du, float x) const {
        const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        return du * (cdf + x * pdf);
    }
};

void cu_leaky_relu2_fwd(pg_act *u, const pg_act *h, size_t n, float slope) { ew(u, h, NULL, n, LeakyFwd{slope}); }
void cu_leaky_relu2_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n, float slope) {
    ew(dh, du, h, n, LeakyBwd{slope});
}
void cu_gelu_fwd(pg_act *u, const pg_act *h, size_t n) { ew(u, h, NULL, n, GeluFwd{}); }
void cu_gelu_bwd(pg_act *dh, const pg_act *du, const pg_act *h, size_t n) { ew(dh, du, h, n, GeluBwd{}); }

/* ---------------------------------------------------------------- lerp (damped recurrence) */
__global__ void lerp_fwd_k(bf16 *out, const bf16 *x, const bf16 *y, const float *__restrict__ r, int N, int C) {
    const size_t n_el = (size_t)N * C;
    GRID_STRIDE(i, n_el) {
        const float xv = ldf(x, (long)i), yv = ldf(y, (long)i);
        stf(out, (long)i, xv + r[i % C] * (yv - xv));
    }
}
void cu_lerp_fwd(pg_act *out, const pg_act *x, const pg_act *y, const float *r, int N, int C) {
    if ((size_t)N * C == 0) return;
    lerp_fwd_k<<<pg_cu_blocks((size_t)N * C, RT), RT, 0, pg_cu_stream>>>((bf16 *)out, (const bf16 *)x, (const bf16 *)y,
                                                                         r, N, C);
    CU_LAUNCHED();
}

struct LerpBwdF {
    bf16 *dx, *dy;
    const bf16 *dout, *x, *y;
    const float *r;
    int C;
    __device__ void operator()(long n, int c, float *v) const {
        const long i = n * C + c;
        const float g = ldf(dout, i); /* read before dy (may alias dout) is written */
        v[0] = g * (ldf(y, i) - ldf(x, i));
        const float rc = r[c];
        stf(dx, i, (1.0f - rc) * g);
        stf(dy, i, rc * g);
    }
};
struct AddPost {
    float *out;
    __device__ void operator()(int c, float s) const { out[c] += s; }
};

void cu_lerp_bwd(pg_act *dx, pg_act *dy, float *dr, const pg_act *dout, const pg_act *x, const pg_act *y,
                 const float *r, int N, int C) {
    if (N <= 0 || C <= 0) return;
    int nch, rpc;
    chunks_of(N, &nch, &rpc);
    float *part = part_scratch((size_t)nch * C);
    LerpBwdF f = {(bf16 *)dx, (bf16 *)dy, (const bf16 *)dout, (const bf16 *)x, (const bf16 *)y, r, C};
    colsum_part<1>(part, N, C, nch, rpc, f);
    AddPost p = {dr};
    colsum_fin(part, nch, C, p);
}

/* ---------------------------------------------------------------- PR #1289's lane update */
__global__ void lane_route_fwd_k(bf16 *y, const bf16 *x, const bf16 *a, const float *__restrict__ sa,
                                 const float *__restrict__ ra, const bf16 *m, const float *__restrict__ sm,
                                 const float *__restrict__ rm, int N, int C) {
    const float r_a = ra[0], r_m = rm[0];
    const size_t n_el = (size_t)N * C;
    GRID_STRIDE(i, n_el) {
        const int c = (int)(i % C);
        stf(y, (long)i, ldf(x, (long)i) + r_a * (sa[c] * ldf(a, (long)i)) + r_m * (sm[c] * ldf(m, (long)i)));
    }
}
void cu_lane_route_fwd(pg_act *y, const pg_act *x, const pg_act *a, const float *sa, const float *ra, const pg_act *m,
                       const float *sm, const float *rm, int N, int C) {
    if ((size_t)N * C == 0) return;
    lane_route_fwd_k<<<pg_cu_blocks((size_t)N * C, RT), RT, 0, pg_cu_stream>>>(
        (bf16 *)y, (const bf16 *)x, (const bf16 *)a, sa, ra, (const bf16 *)m, sm, rm, N, C);
    CU_LAUNCHED();
}

struct LaneBwdF {
    bf16 *da, *dm;
    const bf16 *dy, *a, *m;
    const float *sa, *ra, *sm, *rm;
    int C, accumulate;
    __device__ void operator()(long n, int c, float *v) const {
        const long i = n * C + c;
        const float g = ldf(dy, i);
        v[0] = g * ldf(a, i);
        v[1] = g * ldf(m, i);
        const float va = ra[0] * sa[c] * g, vm = rm[0] * sm[c] * g;
        stf(da, i, accumulate ? ldf(da, i) + va : va);
        stf(dm, i, accumulate ? ldf(dm, i) + vm : vm);
    }
};

/* one block: dsa[c] += ra*s1[c], dsm[c] += rm*s2[c]; dra += sum_c s1*sa, drm += sum_c s2*sm */
__global__ void __launch_bounds__(1024) lane_fin_k(const float *__restrict__ part, int nch, int C, float *dsa,
                                                   float *dsm, float *dra, float *drm, const float *__restrict__ sa,
                                                   const float *__restrict__ ra, const float *__restrict__ sm,
                                                   const float *__restrict__ rm) {
    __shared__ float r1[1024], r2[1024];
    const float r_a = ra[0], r_m = rm[0];
    float pa = 0.0f, pm = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float s1 = 0.0f, s2 = 0.0f;
        for (int j = 0; j < nch; j++) s1 += part[((long)j * 2) * C + c], s2 += part[((long)j * 2 + 1) * C + c];
        dsa[c] += r_a * s1;
        dsm[c] += r_m * s2;
        pa += s1 * sa[c];
        pm += s2 * sm[c];
    }
    r1[threadIdx.x] = pa;
    r2[threadIdx.x] = pm;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) r1[threadIdx.x] += r1[threadIdx.x + s], r2[threadIdx.x] += r2[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        dra[0] += r1[0];
        drm[0] += r2[0];
    }
}

void cu_lane_route_bwd(pg_act *da, pg_act *dm, float *dsa, float *dsm, float *dra, float *drm, const pg_act *dy,
                       const pg_act *a, const float *sa, const float *ra, const pg_act *m, const float *sm,
                       const float *rm, int N, int C, int accumulate) {
    if (N <= 0 || C <= 0) return;
    int nch, rpc;
    chunks_of(N, &nch, &rpc);
    float *part = part_scratch((size_t)nch * 2 * C);
    LaneBwdF f = {(bf16 *)da, (bf16 *)dm, (const bf16 *)dy, (const bf16 *)a, (const bf16 *)m, sa, ra, sm, rm, C,
                  accumulate};
    colsum_part<2>(part, N, C, nch, rpc, f);
    lane_fin_k<<<1, 1024, 0, pg_cu_stream>>>(part, nch, C, dsa, dsm, dra, drm, sa, ra, sm, rm);
    CU_LAUNCHED();
}

/* ---------------------------------------------------------------- int6 STE fake quantisation */
#define FQ_THREADS 256

__device__ __forceinline__ unsigned abs_bf16_bits(float w) {
    return __float_as_uint(__bfloat162float(__float2bfloat16_rn(w))) & 0x7fffffffu;
}

/* the k-th smallest (0-based) of |bf16(w_c)| over the row, exactly: bf16 values have their low 16
 * bits zero, so two 8-bit radix passes over bits 31..16 of the (non-negative) float pattern decide it */
__device__ float kth_abs_bf16(const float *w, int cols, long k, unsigned *hist, unsigned *sh) {
    unsigned prefix = 0u, mask = 0u;
    for (int shift = 24; shift >= 16; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0u;
        __syncthreads();
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const unsigned bits = abs_bf16_bits(w[c]);
            if ((bits & mask) == prefix) atomicAdd(&hist[(bits >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            long cum = 0;
            unsigned sel = 255u;
            for (unsigned b = 0; b < 256u; b++) {
                if (cum + (long)hist[b] > k) {
                    sel = b;
                    break;
                }
                cum += hist[b];
            }
            sh[0] = sel;
            sh[1] = (unsigned)(k - cum);
        }
        __syncthreads();
        prefix |= sh[0] << shift;
        mask |= 255u << shift;
        k = (long)sh[1];
        __syncthreads(); /* sh and hist are rewritten by the next pass */
    }
    return __uint_as_float(prefix);
}

__global__ void __launch_bounds__(FQ_THREADS) fake_quant_k(bf16 *__restrict__ dst, const float *__restrict__ W,
                                                           int cols, int mode, int low) {
    __shared__ unsigned hist[256], sh[2];
    __shared__ float red[FQ_THREADS / 32];
    const float *w = W + (long)blockIdx.x * cols;
    bf16 *o = dst + (long)blockIdx.x * cols;
    if (mode == 1) {
        /* torch.quantile(|w|, q): rank fp32(q)*(n-1) in fp32, lerp between the neighbours as ATen */
        float clip = 0.0f;
        if (cols > 0) {
            const float pos = __fmul_rn((float)QUANT_CLIP_Q, (float)(cols - 1));
            long k = (long)floorf(pos), k1 = (long)ceilf(pos);
            if (k1 > cols - 1) k1 = cols - 1;
            if (k > k1) k = k1;
            const float wt = __fsub_rn(pos, (float)k);
            const float lo = kth_abs_bf16(w, cols, k, hist, sh);
            const float hi = k1 != k ? kth_abs_bf16(w, cols, k + 1, hist, sh) : lo;
            const float d = __fsub_rn(hi, lo);
            clip = fabsf(wt) < 0.5f ? fmaf(wt, d, lo) : fmaf(__fsub_rn(wt, 1.0f), d, hi);
        }
        if (!(clip >= 1e-8f)) clip = 1e-8f;
        const float s = __fdiv_rn(clip, 31.0f);
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float v = __bfloat162float(__float2bfloat16_rn(w[c]));
            v = v < -clip ? -clip : v > clip ? clip : v;
            o[c] = __float2bfloat16_rn(__fmul_rn(rintf(__fdiv_rn(v, s)), s));
        }
    } else {
        float mx = 0.0f;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, fabsf(w[c]));
#pragma unroll
        for (int off = 16; off; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
        __syncthreads();
        mx = red[0];
        for (int j = 1; j < (int)(blockDim.x >> 5); j++) mx = fmaxf(mx, red[j]);
        float s, lo = -31.0f;
        if (mode == 2) s = __fdiv_rn(fmaxf(mx, 1e-12f), 31.0f);
        else s = fmaxf(__fdiv_rn(mx, 31.0f), (float)(1.0 / 31.0)), lo = (float)low;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            float q = rintf(__fdiv_rn(w[c], s));
            q = q < lo ? lo : q > 31.0f ? 31.0f : q;
            o[c] = __float2bfloat16_rn(__fmul_rn(q, s));
        }
    }
}

void cu_fake_quant_rows(pg_wc *dst, const float *W, int rows, int cols, int mode, int low) {
    if (mode < 1 || mode > 3) pg_die("fake_quant_rows: unknown mode %d", mode);
    if (rows <= 0 || cols <= 0) return;
    fake_quant_k<<<(unsigned)rows, FQ_THREADS, 0, pg_cu_stream>>>((bf16 *)dst, W, cols, mode, low);
    CU_LAUNCHED();
}
