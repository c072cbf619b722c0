/* emu.h: a host emulator of the CUDA subset used by attn.cu and ops_records.cu, for checking the
 * kernels without a GPU. Each thread of a block is a ucontext fiber; __syncthreads, warp shuffles,
 * mma.sync m16n8k16 and ldmatrix .x4.trans are collectives that wait for every live thread/lane. */
#pragma once
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <functional>

#define PG_CUDA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
extern dim3 threadIdx, blockIdx, blockDim, gridDim;

struct uint4 { unsigned x, y, z, w; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
struct float2 { float x, y; };

struct __nv_bfloat16 { uint16_t r; };
struct __nv_bfloat162 { __nv_bfloat16 x, y; };
static inline uint16_t emu_f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.r << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{emu_f2bf(f)}; }
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __nv_bfloat162{__float2bfloat16_rn(a), __float2bfloat16_rn(b)};
}
static inline float2 __bfloat1622float2(__nv_bfloat162 v) { return float2{__bfloat162float(v.x), __bfloat162float(v.y)}; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p += v; return o; }

void __syncthreads(void);
float __shfl_xor_sync(unsigned mask, float v, int off);
void emu_mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
void emu_ldmatrix_x4_trans(uint32_t b[4], const void *row_ptr);
/* runs kernel body `f` over grid x block (blocks one after another); dynamic smem bytes */
void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &f);
