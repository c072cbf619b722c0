/* attn.cu: fused causal GQA attention on tensor cores (FlashAttention-2 style; the T x T scores are
 * never written to memory). Layouts (src/ops.h): q, o, dq (B,T,H,D); k, v, dk, dv (B,T,Hk,D), bf16;
 * lse (B,H,T) fp32, natural log of sum_j exp(scale * q.k_j), scale = 1/sqrt(D). Query head h reads
 * key/value head h / (H/Hk).
 *
 * Tensor cores: mma.sync m16n8k16 bf16 x bf16 -> fp32 (sm_80+). Register fragments (PTX ISA,
 * "Matrix Fragments for mma.m16n8k16"), lane = 4*g + t:
 *   A (16x16, row): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
 *   B (16x8, col):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
 *   C (16x8):       c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
 * so a C tile pair (n 0..7, 8..15) in registers is directly the A fragment of the next product.
 * B operands whose k index runs along the rows of a row-major smem matrix (V in P.V, dO in P^T.dO,
 * Q in dS^T.Q, K in dS.K) come from ldmatrix .trans; define PG_ATTN_MANUAL_TRANS to use plain
 * 16-bit shared loads instead (slower, for ruling ldmatrix out when debugging).
 *
 * Kernels (128 threads = 4 warps per block, each warp owns 16 rows of the block's 64; smem rows of
 * DP+8 bf16, so fragment loads are free of bank conflicts; the streamed tiles double-buffered with
 * cp.async, tile i+1 in flight while tile i is computed; PG_ATTN_NO_CPASYNC makes the copies
 * synchronous):
 *   forward   grid (ceil(T/64), H, B): 64 query rows; key tiles of 64 up to the diagonal; online
 *             softmax in the exp2 domain; smem Q + 2 x (K, V) tiles: 45 KB (DP 64), 85 KB (DP 128).
 *   backward  1. Di = rowsum(dO * O) (B,H,T) fp32, a warp per row, into a scratch buffer;
 *             2. dK/dV, grid (ceil(T/64), Hk, B): 64 keys per block, loops over the H/Hk query heads
 *                of the group and over query tiles of BQ rows from the diagonal to T; dK, dV in
 *                registers (fp32), written once (overwrite, no atomics); smem K, V + 2 x (Q, dO,
 *                lse, Di): 55 KB (DP 64, BQ 64), 68.5 KB (DP 128, BQ 32);
 *             3. dQ, grid (ceil(T/64), H, B): 64 query rows, loops over key tiles up to the
 *                diagonal, recomputing P and dP; written once; smem Q, dO + 2 x (K, V): 54 KB
 *                (DP 64), 102 KB (DP 128). No atomics anywhere: deterministic.
 * Head dims: DP = 64 (D <= 64) or 128 (D <= 128) tiles; a D below DP is zero-padded in shared memory
 * (any even D <= 128; the presets use 64). D > 128 stops with an error. */
#include "cuda_common.cuh"

#define ATT_THREADS 128
#define ATT_BR 64 /* query rows per block (forward, dQ) */
#define ATT_BC 64 /* key rows per tile / per dK-dV block */
#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

__device__ __forceinline__ uint32_t ld32(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); /* .x (low half) = lo */
    return *reinterpret_cast<uint32_t *>(&v);
}

__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef PG_CUDA_EMU /* tests/cuda_emu: the host emulator (a warp-collective model of the instruction) */
    emu_mma16816(c, a, b0, b1);
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* A fragment of rows r..r+15, cols c..c+15 of a row-major smem matrix with leading dimension ld */
__device__ __forceinline__ void lda(uint32_t a[4], const bf16 *M, int ld, int r, int c, int g, int t) {
    a[0] = ld32(M + (r + g) * ld + c + 2 * t);
    a[1] = ld32(M + (r + g + 8) * ld + c + 2 * t);
    a[2] = ld32(M + (r + g) * ld + c + 2 * t + 8);
    a[3] = ld32(M + (r + g + 8) * ld + c + 2 * t + 8);
}

/* B fragments (k 16 x n 16 as two n-tiles of 8) where B[kk][n] = M[k0+kk][n0+n] (row-major, k along
 * rows): b[0],b[1] for n-tile n0, b[2],b[3] for n-tile n0+8 */
__device__ __forceinline__ void ldb_trans(uint32_t b[4], const bf16 *M, int ld, int k0, int n0, int lane) {
#ifndef PG_ATTN_MANUAL_TRANS
    const bf16 *p = M + (k0 + (lane & 15)) * ld + n0 + (lane >> 4) * 8;
#ifdef PG_CUDA_EMU
    emu_ldmatrix_x4_trans(b, p);
#else
    uint32_t addr = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(addr));
#endif
#else
    const unsigned short *S = reinterpret_cast<const unsigned short *>(M);
    const int g = lane >> 2, t = lane & 3;
    for (int h = 0; h < 2; h++) {
        const int n = n0 + 8 * h + g;
        b[2 * h] = (uint32_t)S[(k0 + 2 * t) * ld + n] | ((uint32_t)S[(k0 + 2 * t + 1) * ld + n] << 16);
        b[2 * h + 1] = (uint32_t)S[(k0 + 2 * t + 8) * ld + n] | ((uint32_t)S[(k0 + 2 * t + 9) * ld + n] << 16);
    }
#endif
}

/* cp.async (sm_80+): 16-byte global -> shared copies in flight while the block computes; a group
 * per tile (commit), waited for before the __syncthreads that publishes the tile. With
 * PG_ATTN_NO_CPASYNC (and in the emulator) they are plain synchronous copies. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
#if defined(PG_CUDA_EMU) || defined(PG_ATTN_NO_CPASYNC)
    *reinterpret_cast<uint4 *>(smem) = *reinterpret_cast<const uint4 *>(gmem);
#else
    const uint32_t sa = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if !defined(PG_CUDA_EMU) && !defined(PG_ATTN_NO_CPASYNC)
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
/* wait until at most N committed groups of this thread are still in flight */
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if !defined(PG_CUDA_EMU) && !defined(PG_ATTN_NO_CPASYNC)
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* rows row0..row0+R-1 of a (T, stride) bf16 matrix (only the first D columns) into smem [R][DP+8],
 * zero beyond T and beyond D; vec (D == DP, every tensor 16-byte aligned): 16-byte cp.async copies
 * (complete after cp_async_wait + __syncthreads), else synchronous 4-byte loads */
template <int DP>
__device__ __forceinline__ void load_rows(bf16 *dst, const bf16 *src, long stride, int row0, int R, int T, int D,
                                          bool vec) {
    constexpr int LD = DP + 8;
    if (vec) {
        for (int i = threadIdx.x; i < R * (DP / 8); i += blockDim.x) {
            const int r = i / (DP / 8), c = (i % (DP / 8)) * 8;
            if (row0 + r < T) cp_async16(dst + r * LD + c, src + (long)(row0 + r) * stride + c);
            else *reinterpret_cast<uint4 *>(dst + r * LD + c) = make_uint4(0u, 0u, 0u, 0u);
        }
    } else {
        for (int i = threadIdx.x; i < R * (DP / 2); i += blockDim.x) {
            const int r = i / (DP / 2), c = (i % (DP / 2)) * 2;
            uint32_t val = 0u;
            if (row0 + r < T && c < D) val = *reinterpret_cast<const uint32_t *>(src + (long)(row0 + r) * stride + c);
            *reinterpret_cast<uint32_t *>(dst + r * LD + c) = val;
        }
    }
}

__device__ __forceinline__ void store_pair(bf16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}

/* ---------------------------------------------------------------- forward */
template <int DP>
__global__ void __launch_bounds__(ATT_THREADS) attn_fwd_k(bf16 *__restrict__ o, float *__restrict__ lse,
                                                          const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                                          const bf16 *__restrict__ v, int T, int H, int Hk, int D,
                                                          float sl2, bool vec) {
    constexpr int LD = DP + 8, NT = ATT_BC / 8, KD = DP / 16, ND = DP / 8;
    extern __shared__ __align__(16) unsigned char att_smem[];
    /* Q; K and V double-buffered: tile kt+1 is copied while tile kt is computed */
    bf16 *Qs = reinterpret_cast<bf16 *>(att_smem), *Ks = Qs + ATT_BR * LD, *Vs = Ks + 2 * ATT_BC * LD;
    const int qb = (int)gridDim.x - 1 - (int)blockIdx.x; /* longest rows first */
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / Hk);
    const int q0 = qb * ATT_BR;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, wr = warp * 16;
    const long qs = (long)H * D, ks = (long)Hk * D;
    const bf16 *qb_ = q + (long)b * T * qs + (long)h * D;
    const bf16 *kb_ = k + (long)b * T * ks + (long)hk * D;
    const bf16 *vb_ = v + (long)b * T * ks + (long)hk * D;
    load_rows<DP>(Qs, qb_, qs, q0, ATT_BR, T, D, vec);
    load_rows<DP>(Ks, kb_, ks, 0, ATT_BC, T, D, vec);
    load_rows<DP>(Vs, vb_, ks, 0, ATT_BC, T, D, vec);
    cp_async_commit();
    uint32_t qf[KD][4];
    float oacc[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const int r0 = q0 + wr + g, r1 = r0 + 8;
    const int last = (q0 + ATT_BR - 1 < T - 1 ? q0 + ATT_BR - 1 : T - 1) / ATT_BC; /* == qb (BR == BC) */
    for (int kt = 0; kt <= last; kt++) {
        const int k0 = kt * ATT_BC;
        const bf16 *Kt = Ks + (kt & 1) * ATT_BC * LD, *Vt = Vs + (kt & 1) * ATT_BC * LD;
        if (kt < last) { /* the next tile into the other buffers (free since the last iteration's barrier) */
            load_rows<DP>(Ks + ((kt + 1) & 1) * ATT_BC * LD, kb_, ks, k0 + ATT_BC, ATT_BC, T, D, vec);
            load_rows<DP>(Vs + ((kt + 1) & 1) * ATT_BC * LD, vb_, ks, k0 + ATT_BC, ATT_BC, T, D, vec);
            cp_async_commit();
            cp_async_wait<1>(); /* this tile's group (and Q's) has landed */
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kt == 0)
#pragma unroll
            for (int kk = 0; kk < KD; kk++) lda(qf[kk], Qs, LD, wr, kk * 16, g, t);
        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++)
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const bf16 *kp = Kt + (n * 8 + g) * LD + kk * 16 + 2 * t;
                mma16816(s[n], qf[kk], ld32(kp), ld32(kp + 8));
            }
        const bool edge = k0 + ATT_BC - 1 > q0 || k0 + ATT_BC > T; /* the diagonal or ragged tile */
        float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[n][e] * sl2;
                if (edge) {
                    const int col = k0 + n * 8 + 2 * t + (e & 1), row = e < 2 ? r0 : r1;
                    if (col > row || col >= T) x = -INFINITY;
                }
                s[n][e] = x;
                if (e < 2) mx0 = fmaxf(mx0, x);
                else mx1 = fmaxf(mx1, x);
            }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        const float base0 = mn0 == -INFINITY ? 0.0f : mn0, base1 = mn1 == -INFINITY ? 0.0f : mn1;
        const float al0 = exp2f(m0 - base0), al1 = exp2f(m1 - base1);
        m0 = mn0;
        m1 = mn1;
        l0 *= al0;
        l1 *= al1;
#pragma unroll
        for (int i = 0; i < ND; i++) oacc[i][0] *= al0, oacc[i][1] *= al0, oacc[i][2] *= al1, oacc[i][3] *= al1;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            s[n][0] = exp2f(s[n][0] - base0);
            s[n][1] = exp2f(s[n][1] - base0);
            s[n][2] = exp2f(s[n][2] - base1);
            s[n][3] = exp2f(s[n][3] - base1);
            l0 += s[n][0] + s[n][1];
            l1 += s[n][2] + s[n][3];
        }
#pragma unroll
        for (int j = 0; j < ATT_BC / 16; j++) {
            uint32_t pa[4] = {pack_bf16(s[2 * j][0], s[2 * j][1]), pack_bf16(s[2 * j][2], s[2 * j][3]),
                              pack_bf16(s[2 * j + 1][0], s[2 * j + 1][1]), pack_bf16(s[2 * j + 1][2], s[2 * j + 1][3])};
#pragma unroll
            for (int dn = 0; dn < DP / 16; dn++) {
                uint32_t bb[4];
                ldb_trans(bb, Vt, LD, j * 16, dn * 16, lane);
                mma16816(oacc[2 * dn], pa, bb[0], bb[1]);
                mma16816(oacc[2 * dn + 1], pa, bb[2], bb[3]);
            }
        }
        __syncthreads(); /* every warp is done with this tile's buffers before they are refilled */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
    bf16 *ob_ = o + (long)b * T * qs + (long)h * D;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
        if (col < D) {
            if (r0 < T) store_pair(ob_ + (long)r0 * qs + col, oacc[i][0] * inv0, oacc[i][1] * inv0);
            if (r1 < T) store_pair(ob_ + (long)r1 * qs + col, oacc[i][2] * inv1, oacc[i][3] * inv1);
        }
    }
    if (t == 0) {
        float *L = lse + ((long)b * H + h) * T;
        if (r0 < T) L[r0] = (m0 + log2f(l0)) * LN2_F;
        if (r1 < T) L[r1] = (m1 + log2f(l1)) * LN2_F;
    }
}

/* ---------------------------------------------------------------- decoding */
/* one query token per sequence over its n cached keys (pgolf sample, batched decoding), split-K within a
 * block: grid (H, nb), 4 warps; warp
 * w takes keys w, w+4, ... with its own online softmax (lane i holds dims i, i+32, i+64, i+96 of the
 * query and of its output sum; a key's score is a warp sum), then warp 0 merges the four partial
 * results. fp32 throughout, o written once in bf16. */
#define DEC_WARPS 4
__global__ void __launch_bounds__(DEC_WARPS * 32) attn_decode_k(bf16 *__restrict__ o, const bf16 *__restrict__ q,
                                                                const bf16 *__restrict__ k,
                                                                const bf16 *__restrict__ v, int n, int T, int H,
                                                                int Hk, int D, float scale) {
    __shared__ float sm_m[DEC_WARPS], sm_l[DEC_WARPS], sm_acc[DEC_WARPS][128];
    const int h = blockIdx.x, kh = h / (H / Hk), lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const long ks = (long)Hk * D, b = blockIdx.y;
    q += b * H * D; /* this sequence's query, output and cache */
    o += b * H * D;
    k += b * T * ks;
    v += b * T * ks;
    float qr[4], acc[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int d = lane + 32 * i;
        qr[i] = d < D ? __bfloat162float(q[(long)h * D + d]) : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = w; j < n; j += DEC_WARPS) {
        const bf16 *kj = k + (long)j * ks + (long)kh * D, *vj = v + (long)j * ks + (long)kh * D;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int d = lane + 32 * i;
            if (d < D) s += qr[i] * __bfloat162float(kj[d]);
        }
#pragma unroll
        for (int off = 16; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        s *= scale;
        const float mn = fmaxf(m, s), c = expf(m - mn), p = expf(s - mn);
        l = l * c + p;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * c + (d < D ? p * __bfloat162float(vj[d]) : 0.0f);
        }
        m = mn;
    }
    if (lane == 0) sm_m[w] = m, sm_l[w] = l;
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (lane + 32 * i < D) sm_acc[w][lane + 32 * i] = acc[i];
    __syncthreads();
    if (w != 0) return;
    float M = -INFINITY;
    for (int x = 0; x < DEC_WARPS; x++) M = fmaxf(M, sm_m[x]);
    float L = 0.0f, f[DEC_WARPS];
    for (int x = 0; x < DEC_WARPS; x++) L += sm_l[x] * (f[x] = expf(sm_m[x] - M)); /* a warp without keys: 0 */
    const float inv = 1.0f / L;
    for (int d = lane; d < D; d += 32) {
        float a = 0.0f;
        for (int x = 0; x < DEC_WARPS; x++) a += sm_acc[x][d] * f[x];
        o[(long)h * D + d] = __float2bfloat16_rn(a * inv);
    }
}

/* ---------------------------------------------------------------- backward */
/* Di[b,h,t] = sum_d dO*O, a warp per (b,t,h) row */
__global__ void attn_bwd_dot_k(float *__restrict__ Di, const bf16 *__restrict__ dout, const bf16 *__restrict__ o,
                               long rows, int T, int H, int D) {
    const long rw = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (rw >= rows) return;
    const bf16 *a = dout + rw * D, *c = o + rw * D;
    float s = 0.0f;
    for (int d = 2 * lane; d < D; d += 64) {
        const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(a + d));
        const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(c + d));
        s += x.x * y.x + x.y * y.y;
    }
#pragma unroll
    for (int off = 16; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) {
        const int h = (int)(rw % H);
        const long bt = rw / H;
        const int tt = (int)(bt % T);
        const long b = bt / T;
        Di[(b * H + h) * T + tt] = s;
    }
}

/* dK, dV for 64 keys of one kv head: sums over the group's query heads and every query tile */
template <int DP, int BQ>
__global__ void __launch_bounds__(ATT_THREADS, DP == 64 ? 3 : 2) /* 3 blocks per SM at DP 64 (168 registers) */
    attn_bwd_dkdv_k(bf16 *__restrict__ dk, bf16 *__restrict__ dv, const bf16 *__restrict__ q,
                    const bf16 *__restrict__ k, const bf16 *__restrict__ v, const bf16 *__restrict__ dout,
                    const float *__restrict__ lse, const float *__restrict__ Di, int T, int H, int Hk, int D, float sl2,
                    float scale, bool vec) {
    constexpr int LD = DP + 8, NQ = BQ / 8, KD = DP / 16, ND = DP / 8;
    extern __shared__ __align__(16) unsigned char att_smem[];
    /* K, V of the block; Q, dO, lse, Di of the query tiles double-buffered */
    bf16 *Ks = reinterpret_cast<bf16 *>(att_smem), *Vs = Ks + ATT_BC * LD, *Qs = Vs + ATT_BC * LD,
         *dOs = Qs + 2 * BQ * LD;
    float *Ls = reinterpret_cast<float *>(dOs + 2 * BQ * LD), *Ds = Ls + 2 * BQ;
    const int kb = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, grp = H / Hk;
    const int k0 = kb * ATT_BC;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, wr = warp * 16;
    const long qs = (long)H * D, ks = (long)Hk * D;
    load_rows<DP>(Ks, k + (long)b * T * ks + (long)hk * D, ks, k0, ATT_BC, T, D, vec);
    load_rows<DP>(Vs, v + (long)b * T * ks + (long)hk * D, ks, k0, ATT_BC, T, D, vec);
    float dka[ND][4], dva[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) dka[i][e] = dva[i][e] = 0.0f;
    const int j0 = k0 + wr + g, j1 = j0 + 8; /* this thread's key rows */
    /* iteration it: query head hk*grp + it/nq, query tile qt0 + it%nq (queries before the block's
     * first key see none of its keys), staged in buffer it&1 */
    const int nqt = (T + BQ - 1) / BQ, qt0 = k0 / BQ, nq = nqt - qt0, n_it = grp * nq;
    auto stage = [&](int it) {
        const int buf = it & 1, h = hk * grp + it / nq, qq0 = (qt0 + it % nq) * BQ;
        load_rows<DP>(Qs + buf * BQ * LD, q + (long)b * T * qs + (long)h * D, qs, qq0, BQ, T, D, vec);
        load_rows<DP>(dOs + buf * BQ * LD, dout + (long)b * T * qs + (long)h * D, qs, qq0, BQ, T, D, vec);
        const float *Lrow = lse + ((long)b * H + h) * T, *Drow = Di + ((long)b * H + h) * T;
        for (int i = threadIdx.x; i < BQ; i += blockDim.x) {
            const int r = qq0 + i;
            Ls[buf * BQ + i] = r < T ? Lrow[r] * LOG2E_F : 0.0f;
            Ds[buf * BQ + i] = r < T ? Drow[r] : 0.0f;
        }
    };
    stage(0);
    cp_async_commit(); /* with K and V */
    for (int it = 0; it < n_it; it++) {
        const int buf = it & 1, qq0 = (qt0 + it % nq) * BQ;
        if (it + 1 < n_it) { /* the other buffers are free since the last iteration's closing barrier */
            stage(it + 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *Qt = Qs + buf * BQ * LD, *dOt = dOs + buf * BQ * LD;
        const float *Lt = Ls + buf * BQ, *Dt = Ds + buf * BQ;
        /* S^T = K Q^T (16 keys x BQ queries per warp) */
        float st[NQ][4];
#pragma unroll
        for (int n = 0; n < NQ; n++) st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t a[4];
            lda(a, Ks, LD, wr, kk * 16, g, t);
#pragma unroll
            for (int n = 0; n < NQ; n++) {
                const bf16 *qp = Qt + (n * 8 + g) * LD + kk * 16 + 2 * t;
                mma16816(st[n], a, ld32(qp), ld32(qp + 8));
            }
        }
        /* P^T = exp(scale*S^T - lse[query]), zero where query < key or query >= T */
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int ci = n * 8 + 2 * t + (e & 1), i = qq0 + ci, j = e < 2 ? j0 : j1;
                st[n][e] = (i >= j && i < T) ? exp2f(st[n][e] * sl2 - Lt[ci]) : 0.0f;
            }
        /* dV += P^T dO */
#pragma unroll
        for (int jj = 0; jj < BQ / 16; jj++) {
            uint32_t a[4] = {pack_bf16(st[2 * jj][0], st[2 * jj][1]), pack_bf16(st[2 * jj][2], st[2 * jj][3]),
                             pack_bf16(st[2 * jj + 1][0], st[2 * jj + 1][1]),
                             pack_bf16(st[2 * jj + 1][2], st[2 * jj + 1][3])};
#pragma unroll
            for (int dn = 0; dn < DP / 16; dn++) {
                uint32_t bb[4];
                ldb_trans(bb, dOt, LD, jj * 16, dn * 16, lane);
                mma16816(dva[2 * dn], a, bb[0], bb[1]);
                mma16816(dva[2 * dn + 1], a, bb[2], bb[3]);
            }
        }
        /* dP^T = V dO^T */
        float dp[NQ][4];
#pragma unroll
        for (int n = 0; n < NQ; n++) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t a[4];
            lda(a, Vs, LD, wr, kk * 16, g, t);
#pragma unroll
            for (int n = 0; n < NQ; n++) {
                const bf16 *dp_ = dOt + (n * 8 + g) * LD + kk * 16 + 2 * t;
                mma16816(dp[n], a, ld32(dp_), ld32(dp_ + 8));
            }
        }
        /* dS^T = P^T (dP^T - Di[query]) (the scale is applied at the end) */
#pragma unroll
        for (int n = 0; n < NQ; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) dp[n][e] = st[n][e] * (dp[n][e] - Dt[n * 8 + 2 * t + (e & 1)]);
        /* dK += dS^T Q */
#pragma unroll
        for (int jj = 0; jj < BQ / 16; jj++) {
            uint32_t a[4] = {pack_bf16(dp[2 * jj][0], dp[2 * jj][1]), pack_bf16(dp[2 * jj][2], dp[2 * jj][3]),
                             pack_bf16(dp[2 * jj + 1][0], dp[2 * jj + 1][1]),
                             pack_bf16(dp[2 * jj + 1][2], dp[2 * jj + 1][3])};
#pragma unroll
            for (int dn = 0; dn < DP / 16; dn++) {
                uint32_t bb[4];
                ldb_trans(bb, Qt, LD, jj * 16, dn * 16, lane);
                mma16816(dka[2 * dn], a, bb[0], bb[1]);
                mma16816(dka[2 * dn + 1], a, bb[2], bb[3]);
            }
        }
        __syncthreads(); /* this iteration's buffers are refilled next */
    }
    bf16 *dkb = dk + (long)b * T * ks + (long)hk * D, *dvb = dv + (long)b * T * ks + (long)hk * D;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
        if (col < D) {
            if (j0 < T) {
                store_pair(dkb + (long)j0 * ks + col, dka[i][0] * scale, dka[i][1] * scale);
                store_pair(dvb + (long)j0 * ks + col, dva[i][0], dva[i][1]);
            }
            if (j1 < T) {
                store_pair(dkb + (long)j1 * ks + col, dka[i][2] * scale, dka[i][3] * scale);
                store_pair(dvb + (long)j1 * ks + col, dva[i][2], dva[i][3]);
            }
        }
    }
}

/* dQ for 64 query rows of one head: loops over key tiles up to the diagonal */
template <int DP>
__global__ void __launch_bounds__(ATT_THREADS)
    attn_bwd_dq_k(bf16 *__restrict__ dq, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                  const bf16 *__restrict__ v, const bf16 *__restrict__ dout, const float *__restrict__ lse,
                  const float *__restrict__ Di, int T, int H, int Hk, int D, float sl2, float scale, bool vec) {
    constexpr int LD = DP + 8, NT = ATT_BC / 8, KD = DP / 16, ND = DP / 8;
    extern __shared__ __align__(16) unsigned char att_smem[];
    /* Q, dO; K and V double-buffered */
    bf16 *Qs = reinterpret_cast<bf16 *>(att_smem), *dOs = Qs + ATT_BR * LD, *Ks = dOs + ATT_BR * LD,
         *Vs = Ks + 2 * ATT_BC * LD;
    const int qb = (int)gridDim.x - 1 - (int)blockIdx.x;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / Hk);
    const int q0 = qb * ATT_BR;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, wr = warp * 16;
    const long qs = (long)H * D, ks = (long)Hk * D;
    const bf16 *kb_ = k + (long)b * T * ks + (long)hk * D, *vb_ = v + (long)b * T * ks + (long)hk * D;
    load_rows<DP>(Qs, q + (long)b * T * qs + (long)h * D, qs, q0, ATT_BR, T, D, vec);
    load_rows<DP>(dOs, dout + (long)b * T * qs + (long)h * D, qs, q0, ATT_BR, T, D, vec);
    load_rows<DP>(Ks, kb_, ks, 0, ATT_BC, T, D, vec);
    load_rows<DP>(Vs, vb_, ks, 0, ATT_BC, T, D, vec);
    cp_async_commit();
    const int r0 = q0 + wr + g, r1 = r0 + 8;
    const float *Lrow = lse + ((long)b * H + h) * T, *Drow = Di + ((long)b * H + h) * T;
    const float L0 = r0 < T ? Lrow[r0] * LOG2E_F : 0.0f, L1 = r1 < T ? Lrow[r1] * LOG2E_F : 0.0f;
    const float D0 = r0 < T ? Drow[r0] : 0.0f, D1 = r1 < T ? Drow[r1] : 0.0f;
    float dqa[ND][4];
#pragma unroll
    for (int i = 0; i < ND; i++) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.0f;
    const int last = (q0 + ATT_BR - 1 < T - 1 ? q0 + ATT_BR - 1 : T - 1) / ATT_BC;
    for (int kt = 0; kt <= last; kt++) {
        const int k0 = kt * ATT_BC;
        const bf16 *Kt = Ks + (kt & 1) * ATT_BC * LD, *Vt = Vs + (kt & 1) * ATT_BC * LD;
        if (kt < last) {
            load_rows<DP>(Ks + ((kt + 1) & 1) * ATT_BC * LD, kb_, ks, k0 + ATT_BC, ATT_BC, T, D, vec);
            load_rows<DP>(Vs + ((kt + 1) & 1) * ATT_BC * LD, vb_, ks, k0 + ATT_BC, ATT_BC, T, D, vec);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; kk++) {
            uint32_t a[4], c[4];
            lda(a, Qs, LD, wr, kk * 16, g, t);
            lda(c, dOs, LD, wr, kk * 16, g, t);
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const bf16 *kp = Kt + (n * 8 + g) * LD + kk * 16 + 2 * t, *vp = Vt + (n * 8 + g) * LD + kk * 16 + 2 * t;
                mma16816(s[n], a, ld32(kp), ld32(kp + 8));  /* S = Q K^T */
                mma16816(dp[n], c, ld32(vp), ld32(vp + 8)); /* dP = dO V^T */
            }
        }
        const bool edge = k0 + ATT_BC - 1 > q0 || k0 + ATT_BC > T;
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = k0 + n * 8 + 2 * t + (e & 1), row = e < 2 ? r0 : r1;
                const float p = (edge && (col > row || col >= T)) ? 0.0f : exp2f(s[n][e] * sl2 - (e < 2 ? L0 : L1));
                dp[n][e] = p * (dp[n][e] - (e < 2 ? D0 : D1)); /* dS (unscaled) */
            }
        /* dQ += dS K */
#pragma unroll
        for (int jj = 0; jj < ATT_BC / 16; jj++) {
            uint32_t a[4] = {pack_bf16(dp[2 * jj][0], dp[2 * jj][1]), pack_bf16(dp[2 * jj][2], dp[2 * jj][3]),
                             pack_bf16(dp[2 * jj + 1][0], dp[2 * jj + 1][1]),
                             pack_bf16(dp[2 * jj + 1][2], dp[2 * jj + 1][3])};
#pragma unroll
            for (int dn = 0; dn < DP / 16; dn++) {
                uint32_t bb[4];
                ldb_trans(bb, Kt, LD, jj * 16, dn * 16, lane);
                mma16816(dqa[2 * dn], a, bb[0], bb[1]);
                mma16816(dqa[2 * dn + 1], a, bb[2], bb[3]);
            }
        }
        __syncthreads(); /* this tile's buffers are refilled next */
    }
    bf16 *dqb = dq + (long)b * T * qs + (long)h * D;
#pragma unroll
    for (int i = 0; i < ND; i++) {
        const int col = i * 8 + 2 * t;
        if (col < D) {
            if (r0 < T) store_pair(dqb + (long)r0 * qs + col, dqa[i][0] * scale, dqa[i][1] * scale);
            if (r1 < T) store_pair(dqb + (long)r1 * qs + col, dqa[i][2] * scale, dqa[i][3] * scale);
        }
    }
}

/* ---------------------------------------------------------------- host side */
static void attn_check(int B, int H, int Hk, int D) {
    if (Hk <= 0 || H % Hk) pg_die("attention: %d query heads are not a multiple of %d kv heads", H, Hk);
    if (D <= 0 || D > 128 || D % 2)
        pg_die("attention: head dim %d is not supported by the CUDA backend (even, at most 128)", D);
    if (B > 65535 || H > 65535) pg_die("attention: B=%d or H=%d too large for the CUDA grid", B, H);
}

/* 16-byte row loads: D fills the tile and every tensor is 16-byte aligned (rows then are: D*2 bytes
 * is a multiple of 128) */
static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* raises a kernel's dynamic shared-memory limit once (above 48 KB) */
template <typename K>
static void smem_limit(K *kernel, size_t bytes, int *done) {
    if (bytes > 48 * 1024 && !*done) {
        CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
        *done = 1;
    }
}

template <int DP>
static void attn_fwd_launch(bf16 *o, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int B, int T, int H,
                            int Hk, int D) {
    static int done;
    const size_t smem = (size_t)(ATT_BR + 4 * ATT_BC) * (DP + 8) * sizeof(bf16);
    smem_limit(attn_fwd_k<DP>, smem, &done);
    const float sl2 = (1.0f / sqrtf((float)D)) * LOG2E_F;
    dim3 grid((unsigned)((T + ATT_BR - 1) / ATT_BR), (unsigned)H, (unsigned)B);
    const bool vec = D == DP && aligned16(q) && aligned16(k) && aligned16(v);
    attn_fwd_k<DP><<<grid, ATT_THREADS, smem, pg_cu_stream>>>(o, lse, q, k, v, T, H, Hk, D, sl2, vec);
    CU_LAUNCHED();
}

void cu_attn_fwd(pg_act *o, float *lse, const pg_act *q, const pg_act *k, const pg_act *v, int B, int T, int H, int Hk,
                 int D) {
    attn_check(B, H, Hk, D);
    if (B <= 0 || T <= 0 || H <= 0) return;
    if (D <= 64)
        attn_fwd_launch<64>((bf16 *)o, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T, H, Hk, D);
    else
        attn_fwd_launch<128>((bf16 *)o, lse, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, B, T, H, Hk, D);
}

void cu_attn_decode(pg_act *o, const pg_act *q, const pg_act *k, const pg_act *v, int nb, int n, int T, int H, int Hk,
                    int D) {
    attn_check(nb, H, Hk, D);
    if (nb <= 0 || n <= 0 || H <= 0) return;
    if (n > T || nb > 65535) pg_die("attn_decode: %d cached keys in caches of %d rows, %d sequences", n, T, nb);
    attn_decode_k<<<dim3((unsigned)H, (unsigned)nb), DEC_WARPS * 32, 0, pg_cu_stream>>>(
        (bf16 *)o, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, n, T, H, Hk, D, 1.0f / sqrtf((float)D));
    CU_LAUNCHED();
}

/* the Di scratch (B*H*T floats), grown stream-ordered */
static float *g_di;
static size_t g_di_cap;
static float *di_scratch(size_t n) {
    if (n > g_di_cap) {
        if (g_di) CU_CHECK(cudaFreeAsync(g_di, pg_cu_stream));
        CU_CHECK(cudaMallocAsync((void **)&g_di, n * sizeof(float), pg_cu_stream));
        g_di_cap = n;
    }
    return g_di;
}

template <int DP, int BQ>
static void attn_bwd_launch(bf16 *dq, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                            const bf16 *v, const float *lse, const float *Di, int B, int T, int H, int Hk, int D) {
    static int done_kv, done_q;
    const float scale = 1.0f / sqrtf((float)D), sl2 = scale * LOG2E_F;
    const size_t smem_kv = (size_t)(2 * ATT_BC + 4 * BQ) * (DP + 8) * sizeof(bf16) + 4 * BQ * sizeof(float);
    const size_t smem_q = (size_t)(2 * ATT_BR + 4 * ATT_BC) * (DP + 8) * sizeof(bf16);
    smem_limit(attn_bwd_dkdv_k<DP, BQ>, smem_kv, &done_kv);
    smem_limit(attn_bwd_dq_k<DP>, smem_q, &done_q);
    const bool vec = D == DP && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dout);
    dim3 gkv((unsigned)((T + ATT_BC - 1) / ATT_BC), (unsigned)Hk, (unsigned)B);
    attn_bwd_dkdv_k<DP, BQ><<<gkv, ATT_THREADS, smem_kv, pg_cu_stream>>>(dk, dv, q, k, v, dout, lse, Di, T, H, Hk, D,
                                                                          sl2, scale, vec);
    CU_LAUNCHED();
    dim3 gq((unsigned)((T + ATT_BR - 1) / ATT_BR), (unsigned)H, (unsigned)B);
    attn_bwd_dq_k<DP><<<gq, ATT_THREADS, smem_q, pg_cu_stream>>>(dq, q, k, v, dout, lse, Di, T, H, Hk, D, sl2, scale,
                                                                 vec);
    CU_LAUNCHED();
}

void cu_attn_bwd(pg_act *dq, pg_act *dk, pg_act *dv, const pg_act *dout, const pg_act *q, const pg_act *k,
                 const pg_act *v, const pg_act *o, const float *lse, int B, int T, int H, int Hk, int D) {
    attn_check(B, H, Hk, D);
    if (B <= 0 || T <= 0 || H <= 0) return;
    const long rows = (long)B * T * H;
    float *Di = di_scratch((size_t)rows);
    attn_bwd_dot_k<<<(unsigned)((rows + 3) / 4), 128, 0, pg_cu_stream>>>(Di, (const bf16 *)dout, (const bf16 *)o, rows,
                                                                         T, H, D);
    CU_LAUNCHED();
    if (D <= 64)
        attn_bwd_launch<64, 64>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)q,
                                (const bf16 *)k, (const bf16 *)v, lse, Di, B, T, H, Hk, D);
    else
        attn_bwd_launch<128, 32>((bf16 *)dq, (bf16 *)dk, (bf16 *)dv, (const bf16 *)dout, (const bf16 *)q,
                                 (const bf16 *)k, (const bf16 *)v, lse, Di, B, T, H, Hk, D);
}
