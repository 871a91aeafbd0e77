/*
 * The register tile shared by the bf16 GEMM and attention: ROWS rows of x (broadcast in pairs)
 * against one packed panel of COLS outputs, fp32 accumulators over the whole reduction, then one of
 * two stores: bf16 with an optional bf16 bias (linears), or fp32 (attention scores and outputs).
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
            _mm256_mask_storeu_epi16(y + r * ldy, lo, (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[r][0], b0)));
            _mm256_mask_storeu_epi16(y + r * ldy + 16, hi, (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(acc[r][1], b1)));
        }
}

#endif
