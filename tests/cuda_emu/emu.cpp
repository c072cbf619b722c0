/* emu.cpp: the fiber scheduler of emu.h and a pg_cuda_ops table over host memory (bf16 activations)
 * with the functions of attn.cu and ops_records.cu, so tests/test_cuda_records.c runs unchanged
 * (tests/cuda_emu/run.sh). Both extern shared arrays of the kernels (att_smem, xsa_du) are defined
 * here; blocks run one after another. */
#include <setjmp.h>
#include <ucontext.h>
#include <vector>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#include "cuda_common.cuh"

dim3 threadIdx, blockIdx, blockDim, gridDim;
cudaStream_t pg_cu_stream;
alignas(16) unsigned char att_smem[1 << 18];
float xsa_du[1 << 16];
static size_t g_smem_bytes;

enum { RUN, BAR, WARP, DONE };
/* a fiber starts through makecontext/swapcontext; later switches use _setjmp/_longjmp, which do
 * not save the signal mask (swapcontext's system call made switching the bottleneck) */
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    std::vector<char> stack;
    int state, started;
    unsigned tid;
};
static std::vector<Fiber> F;
static ucontext_t g_sched;
static jmp_buf g_sched_jb;
static int g_cur;
static const std::function<void()> *g_body;
static int g_wgen[32];
static uint32_t g_wslot[32][2][32][12];

static uint32_t g_rng = 12345u;
static uint32_t emu_rand() { /* xorshift32: a fixed schedule for a given run */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}
static void die(const char *m) {
    fprintf(stderr, "EMU ERROR: %s (block %u,%u,%u thread %d)\n", m, blockIdx.x, blockIdx.y, blockIdx.z, g_cur);
    abort();
}
static void trampoline() {
    (*g_body)();
    F[g_cur].state = DONE;
    _longjmp(g_sched_jb, 1);
}
static void yield_as(int st) {
    F[g_cur].state = st;
    if (!_setjmp(F[g_cur].jb)) _longjmp(g_sched_jb, 1);
}
static void resume(int i) {
    g_cur = i;
    threadIdx = dim3(i, 0, 0);
    if (_setjmp(g_sched_jb)) return;
    if (!F[i].started) {
        F[i].started = 1;
        swapcontext(&g_sched, &F[i].ctx);
    } else {
        _longjmp(F[i].jb, 1);
    }
}
void __syncthreads(void) { yield_as(BAR); }

/* deposit n words, wait for the warp, return the parity whose slots hold every lane's deposit */
static int warp_exchange(const uint32_t *in, int n) {
    int w = g_cur >> 5, lane = g_cur & 31, par = g_wgen[w] & 1;
    memcpy(g_wslot[w][par][lane], in, n * 4);
    yield_as(WARP);
    return par;
}
float __shfl_xor_sync(unsigned mask, float v, int off) {
    if (mask != 0xffffffffu) die("partial shuffle mask");
    uint32_t u = __float_as_uint(v);
    int par = warp_exchange(&u, 1), w = g_cur >> 5, lane = g_cur & 31;
    return __uint_as_float(g_wslot[w][par][lane ^ off][0]);
}
static float lo_bf(uint32_t u) { return __bfloat162float(__nv_bfloat16{(uint16_t)(u & 0xffff)}); }
static float hi_bf(uint32_t u) { return __bfloat162float(__nv_bfloat16{(uint16_t)(u >> 16)}); }
void emu_mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    uint32_t in[6] = {a[0], a[1], a[2], a[3], b0, b1};
    int par = warp_exchange(in, 6), w = g_cur >> 5, lane = g_cur & 31;
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *s = g_wslot[w][par][l];
        int g = l >> 2, t = l & 3;
        A[g][2 * t] = lo_bf(s[0]), A[g][2 * t + 1] = hi_bf(s[0]);
        A[g + 8][2 * t] = lo_bf(s[1]), A[g + 8][2 * t + 1] = hi_bf(s[1]);
        A[g][2 * t + 8] = lo_bf(s[2]), A[g][2 * t + 9] = hi_bf(s[2]);
        A[g + 8][2 * t + 8] = lo_bf(s[3]), A[g + 8][2 * t + 9] = hi_bf(s[3]);
        B[2 * t][g] = lo_bf(s[4]), B[2 * t + 1][g] = hi_bf(s[4]);
        B[2 * t + 8][g] = lo_bf(s[5]), B[2 * t + 9][g] = hi_bf(s[5]);
    }
    int g = lane >> 2, t = lane & 3;
    int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; e++) {
        float s = c[e];
        for (int k = 0; k < 16; k++) s += A[rows[e]][k] * B[k][cols[e]];
        c[e] = s;
    }
}
void emu_ldmatrix_x4_trans(uint32_t b[4], const void *row_ptr) {
    const unsigned char *p = (const unsigned char *)row_ptr;
    if (p < att_smem || p + 16 > att_smem + g_smem_bytes) die("ldmatrix row outside the dynamic shared memory");
    if ((p - att_smem) % 16) die("ldmatrix row address not 16-byte aligned");
    uint64_t addr = (uint64_t)(uintptr_t)row_ptr;
    uint32_t in[2] = {(uint32_t)addr, (uint32_t)(addr >> 32)};
    int par = warp_exchange(in, 2), w = g_cur >> 5, lane = g_cur & 31;
    int g = lane >> 2, t = lane & 3;
    for (int j = 0; j < 4; j++) {
        const uint32_t *s0 = g_wslot[w][par][8 * j + 2 * t], *s1 = g_wslot[w][par][8 * j + 2 * t + 1];
        const uint16_t *r0 = (const uint16_t *)(uintptr_t)((uint64_t)s0[0] | ((uint64_t)s0[1] << 32));
        const uint16_t *r1 = (const uint16_t *)(uintptr_t)((uint64_t)s1[0] | ((uint64_t)s1[1] << 32));
        b[j] = (uint32_t)r0[g] | ((uint32_t)r1[g] << 16);
    }
}

void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &f) {
    if (block.y != 1 || block.z != 1 || block.x > 1024 || block.x % 32) { fprintf(stderr, "bad block\n"); abort(); }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) { fprintf(stderr, "empty grid\n"); abort(); }
    if (smem > sizeof(xsa_du)) { fprintf(stderr, "smem too large\n"); abort(); }
    g_smem_bytes = smem;
    gridDim = grid;
    blockDim = block;
    g_body = &f;
    const int nt = (int)block.x;
    F.resize(nt);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = dim3(bx, by, bz);
                /* dynamic shared memory: NaN until written; with ASan, bytes beyond the launch's size poisoned */
                UNPOISON(att_smem, sizeof(att_smem));
                UNPOISON(xsa_du, sizeof(xsa_du));
                memset(att_smem, 0xff, smem);
                memset(xsa_du, 0xff, smem);
                POISON(att_smem + smem, sizeof(att_smem) - smem);
                POISON((char *)xsa_du + smem, sizeof(xsa_du) - smem);
                for (int i = 0; i < 32; i++) g_wgen[i] = 0;
                for (int i = 0; i < nt; i++) {
                    F[i].stack.resize(1 << 17);
                    F[i].state = RUN;
                    F[i].started = 0;
                    F[i].tid = i;
                    getcontext(&F[i].ctx);
                    F[i].ctx.uc_stack.ss_sp = F[i].stack.data();
                    F[i].ctx.uc_stack.ss_size = F[i].stack.size();
                    F[i].ctx.uc_link = NULL;
                    makecontext(&F[i].ctx, trampoline, 0);
                }
                for (;;) {
                    const int first = (int)(emu_rand() % (unsigned)nt);
                    for (int j = 0; j < nt; j++) {
                        const int i = (first + j) % nt;
                        while (F[i].state == RUN) resume(i);
                    }
                    int live = 0, bar = 0;
                    for (int i = 0; i < nt; i++) live += F[i].state != DONE, bar += F[i].state == BAR;
                    if (!live) break;
                    /* warps whose lanes all wait at a collective; each is released with probability
                     * 1/3 (at least one per round), so warps drift apart between barriers and a
                     * missing __syncthreads shows as a wrong result */
                    int ready[32], nready = 0, released = 0;
                    for (int w = 0; w < nt / 32; w++) {
                        int wl = 0, ww = 0, wd = 0;
                        for (int l = 0; l < 32; l++) {
                            int st = F[w * 32 + l].state;
                            wl += st != DONE, ww += st == WARP, wd += st == DONE;
                        }
                        if (ww && ww == wl) {
                            if (wd) { g_cur = w * 32; die("warp collective with exited lanes"); }
                            ready[nready++] = w;
                        }
                    }
                    for (int r = 0; r < nready; r++) {
                        int w = ready[r];
                        if (emu_rand() % 3 && !(r == nready - 1 && !released)) continue;
                        for (int l = 0; l < 32; l++) F[w * 32 + l].state = RUN;
                        g_wgen[w]++;
                        released = 1;
                    }
                    if (!released && bar == live) {
                        for (int i = 0; i < nt; i++)
                            if (F[i].state == BAR) F[i].state = RUN;
                        released = 1;
                    }
                    if (!released) { g_cur = 0; die("deadlock (divergent barrier or collective)"); }
                }
            }
}

/* ---- a pg_cuda_ops over host memory ---- */
static void *e_alloc(size_t n) { void *p = malloc(n ? n : 1); memset(p, 0xff, n); return p; }
static void e_free(void *p) { free(p); }
static void e_zero(void *p, size_t n) { memset(p, 0, n); }
static void e_copy(void *d, const void *s, size_t n) { memcpy(d, s, n); }
static void e_copy_rows(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t rows) {
    for (size_t r = 0; r < rows; r++) memcpy((char *)d + r * dp, (const char *)s + r * sp, w);
}
static void e_sync(void) {}
static void e_from(pg_act *d, const float *h, size_t n) {
    for (size_t i = 0; i < n; i++) ((uint16_t *)d)[i] = emu_f2bf(h[i]);
}
static void e_to(float *h, const pg_act *s, size_t n) {
    for (size_t i = 0; i < n; i++) h[i] = __bfloat162float(__nv_bfloat16{((const uint16_t *)s)[i]});
}
extern "C" int pg_cuda_available(char *why, size_t n) { (void)why; (void)n; return 1; }
static pg_ops make_ops() {
    pg_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda-emu";
    o.act_bytes = 2;
    o.wc_bytes = 2;
    o.alloc = e_alloc;
    o.free = e_free;
    o.zero = e_zero;
    o.to_device = e_copy;
    o.to_host = e_copy;
    o.copy_rows = e_copy_rows;
    o.sync = e_sync;
    o.act_from_f32 = e_from;
    o.act_to_f32 = e_to;
    o.attn_fwd = cu_attn_fwd;
    o.attn_bwd = cu_attn_bwd;
    o.attn_decode = cu_attn_decode;
    o.smear_fwd = cu_smear_fwd;
    o.smear_bwd = cu_smear_bwd;
    o.xsa_fwd = cu_xsa_fwd;
    o.xsa_bwd = cu_xsa_bwd;
    o.leaky_relu2_fwd = cu_leaky_relu2_fwd;
    o.leaky_relu2_bwd = cu_leaky_relu2_bwd;
    o.lerp_fwd = cu_lerp_fwd;
    o.lerp_bwd = cu_lerp_bwd;
    o.gelu_fwd = cu_gelu_fwd;
    o.gelu_bwd = cu_gelu_bwd;
    o.lane_route_fwd = cu_lane_route_fwd;
    o.lane_route_bwd = cu_lane_route_bwd;
    o.fake_quant_rows = cu_fake_quant_rows;
    return o;
}
extern "C" const pg_ops pg_cuda_ops = make_ops();
/* quant.o needs it for its state-dict paths, which the tests here never take */
extern "C" int name_matches_patterns(void) { abort(); }
