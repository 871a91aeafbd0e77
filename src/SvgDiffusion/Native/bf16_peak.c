/*
 * The physical bf16 peak: VDPBF16PS (16 lanes x 2 products, 64 FLOP per instruction) in a loop with
 * 24 independent accumulators, enough to cover its latency on two pipes. The GEMM's fraction of
 * peak is measured against this, not against an assumed 2x the fp32 FMA rate.
 */
#include <immintrin.h>
#include <stdint.h>

#define CHAINS 24

int64_t svgd_bf16_dot_flops_per_iteration(void) { return CHAINS * 64; }

float svgd_bf16_dot_loop(int64_t iterations)
{
    __m512 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_setzero_ps();
    __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380); /* 1.0, ~6e-8 */
    for (int64_t n = 0; n < iterations; n++)
    {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
        __asm__ volatile("" : "+v"(a)); /* keeps the loop from being folded away */
    }
    __m512 sum = acc[0];
    for (int i = 1; i < CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}
