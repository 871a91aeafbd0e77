/*
 * The register tile shared by the bf16 GEMM and attention: ROWS rows of x (broadcast in pairs)
 * against one packed panel of COLS outputs, fp32 accumulators over the whole reduction, then one of
 * three stores: bf16 with an optional bf16 bias (linears), the same through GELU (the MLP's first
 * linear), or fp32 (attention scores and outputs).
 */
#ifndef SVGD_BF16_TILE_H
#define SVGD_BF16_TILE_H

#include <immintrin.h>
#include <stdint.h>
#include <stddef.h>

#define ROWS 14
#define COLS 32
#define STORE_BF16 0
#define STORE_F32 1
#define STORE_BF16_GELU 2 /* bf16 after bias and the tanh-approximated GELU, both in fp32 */

/* e^x on [-87, 88] (clamped outside), relative error about 2e-7. */
static inline __m512 bf16_exp(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    /* Taylor to r^6 on |r| <= ln2/2 */
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* GELU, tanh form: u·σ(2z) = u / (1 + e^(-2z)) with z = √(2/π)·(u + 0.044715·u³), equal to ½u(1 + tanh z). */
static inline __m512 bf16_gelu_tanh(__m512 u)
{
    __m512 u3 = _mm512_mul_ps(_mm512_mul_ps(u, u), u);
    __m512 z = _mm512_mul_ps(_mm512_fmadd_ps(u3, _mm512_set1_ps(0.044715f), u), _mm512_set1_ps(-2.0f * 0.7978845608028654f));
    return _mm512_div_ps(u, _mm512_add_ps(_mm512_set1_ps(1.0f), bf16_exp(z)));
}

/*
 * Packs n rows of a bf16 matrix (row stride ldw elements, k columns, k even) as panels of COLS
 * rows: for each pair of columns (2p, 2p+1), the panel's rows' two values side by side, i.e.
 * [ceil(n/COLS)][k/2][COLS][2]. Rows past n are zeros.
 */
static inline void bf16_pack_rows(const uint16_t *w, int64_t ldw, int32_t n, int32_t k, uint16_t *panels)
{
    int32_t pairs = k / 2, count = (n + COLS - 1) / COLS;
    for (int32_t j = 0; j < count; j++)
    {
        uint32_t *out = (uint32_t *)panels + (int64_t)j * pairs * COLS; /* a pair of bf16 is one 32-bit word */
        for (int32_t c = 0; c < COLS; c++)
        {
            int32_t row = j * COLS + c;
            const uint32_t *src = (const uint32_t *)(w + (int64_t)row * ldw);
            for (int32_t p = 0; p < pairs; p++) out[(int64_t)p * COLS + c] = row < n ? src[p] : 0u;
        }
    }
}

static inline __m512 load_bias(const uint16_t *bias, __mmask16 mask)
{
    if (!bias) return _mm512_setzero_ps();
    __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, bias));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

/* One tile: rows [0, rows) of x (rows <= ROWS, a constant where inlined) against one panel. */
static inline __attribute__((always_inline)) void bf16_tile(int rows, const uint16_t *x, int64_t ldx, const uint16_t *panel,
                                                            int32_t pairs, int store, const uint16_t *bias, uint16_t *y,
                                                            int64_t ldy, float *c, __mmask16 lo, __mmask16 hi)
{
    __m512 acc[ROWS][2];
#pragma GCC unroll 14
    for (int r = 0; r < ROWS; r++)
        if (r < rows) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int32_t p = 0; p < pairs; p++)
    {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + (int64_t)p * 2 * COLS);
        __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + (int64_t)p * 2 * COLS + COLS);
#pragma GCC unroll 14
        for (int r = 0; r < ROWS; r++)
            if (r < rows)
            {
                __m512bh a = (__m512bh)_mm512_set1_epi32(*(const int32_t *)(x + r * ldx + 2 * p));
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, w0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, w1);
            }
    }
    if (store == STORE_F32)
    {
        /* c has ldy floats per row and room for the whole panel */
#pragma GCC unroll 14
        for (int r = 0; r < ROWS; r++)
            if (r < rows)
            {
                _mm512_storeu_ps(c + r * ldy, acc[r][0]);
                _mm512_storeu_ps(c + r * ldy + 16, acc[r][1]);
            }
        return;
    }
    __m512 b0 = load_bias(bias, lo), b1 = load_bias(bias ? bias + 16 : 0, hi);
#pragma GCC unroll 14
    for (int r = 0; r < ROWS; r++)
        if (r < rows)
        {
            __m512 v0 = _mm512_add_ps(acc[r][0], b0), v1 = _mm512_add_ps(acc[r][1], b1);
            if (store == STORE_BF16_GELU) v0 = bf16_gelu_tanh(v0), v1 = bf16_gelu_tanh(v1);
            _mm256_mask_storeu_epi16(y + r * ldy, lo, (__m256i)_mm512_cvtneps_pbh(v0));
            _mm256_mask_storeu_epi16(y + r * ldy + 16, hi, (__m256i)_mm512_cvtneps_pbh(v1));
        }
}

#endif
