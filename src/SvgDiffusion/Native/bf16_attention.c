/*
 * bf16 scaled dot-product attention for inference, straight from the fused qkv projection:
 * softmax(q·kᵀ / sqrt(d))·v for every (image, head), without the transposes and copies of the
 * libtorch route. libtorch's CPU flash-attention kernel runs its products on MKL's fp32 GEMM (a
 * generic path on AMD); at the DiT-XL's 256 tokens and head width 72 it took about 15% of a forward.
 *
 * Per (image, head), on one thread: k is packed as a GEMM weight (panels of 32 keys) and vᵀ as one
 * (panels of 32 channels, keys in pairs). Then 14 queries at a time: the scores q·kᵀ in fp32 on the
 * bf16 tile, the softmax in fp32 (max subtracted, exp, sum), the unnormalised probabilities rounded
 * to bf16 as libtorch's kernel does before its second product, p·v in fp32, and the division by the
 * sum before the one rounding of the output. The whole row of scores is kept (no flash tiling): at
 * 1024 tokens that is 57 KB per 14 queries.
 */
#include <math.h>
#include <stdlib.h>
#include "bf16_tile.h"
#include "bf16_jobs.h"

static inline __mmask16 tail_mask(int32_t left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

/*
 * vᵀ as GEMM panels: panel of 32 channels, for each pair of keys (2p, 2p+1) the channel's two values
 * side by side. Two rows of 32 channels in, interleaved by word: one permute per half panel.
 */
static void pack_values(const uint16_t *v, int64_t ldv, int32_t keys, int32_t dim, int32_t key_pairs, uint16_t *panels)
{
    uint16_t lo_index[32], hi_index[32];
    for (int i = 0; i < 16; i++)
    {
        lo_index[2 * i] = (uint16_t)i, lo_index[2 * i + 1] = (uint16_t)(32 + i);
        hi_index[2 * i] = (uint16_t)(16 + i), hi_index[2 * i + 1] = (uint16_t)(48 + i);
    }
    __m512i lo = _mm512_loadu_si512(lo_index), hi = _mm512_loadu_si512(hi_index);
    int32_t count = (dim + COLS - 1) / COLS;
    for (int32_t j = 0; j < count; j++)
    {
        int32_t left = dim - j * COLS;
        __mmask32 mask = left >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << left) - 1);
        uint16_t *out = panels + (int64_t)j * key_pairs * COLS * 2;
        for (int32_t p = 0; p < key_pairs; p++)
        {
            __m512i a = _mm512_maskz_loadu_epi16(mask, v + (int64_t)(2 * p) * ldv + j * COLS);
            __m512i b = 2 * p + 1 < keys ? _mm512_maskz_loadu_epi16(mask, v + (int64_t)(2 * p + 1) * ldv + j * COLS) : _mm512_setzero_si512();
            _mm512_storeu_si512(out + (int64_t)p * COLS * 2, _mm512_permutex2var_epi16(a, lo, b));
            _mm512_storeu_si512(out + (int64_t)p * COLS * 2 + COLS, _mm512_permutex2var_epi16(a, hi, b));
        }
    }
}

static void head(const svgd_bf16_attention_job *job, int32_t b, int32_t h, uint16_t *kp, uint16_t *vp, float *s, uint16_t *pr, float *o)
{
    int32_t n = job->tokens, d = job->dim, heads = job->heads;
    int32_t key_panels = (n + COLS - 1) / COLS, dim_panels = (d + COLS - 1) / COLS;
    int32_t key_pairs = (n + 1) / 2, lds = key_panels * COLS, ldp = 2 * key_pairs, ldo = dim_panels * COLS;
    int64_t ldq = 3LL * heads * d, ldout = (int64_t)heads * d;
    const uint16_t *q = job->qkv + (int64_t)b * n * ldq + (int64_t)h * d;
    const uint16_t *k = q + (int64_t)heads * d, *v = q + 2LL * heads * d;
    uint16_t *out = job->out + (int64_t)b * n * ldout + (int64_t)h * d;
    bf16_pack_rows(k, ldq, n, d, kp);
    pack_values(v, ldq, n, d, key_pairs, vp);
    __m512 scale = _mm512_set1_ps(job->scale);
    float sums[ROWS];
    for (int32_t i = 0; i < n; i += ROWS)
    {
        int32_t rows = n - i < ROWS ? n - i : ROWS;
        const uint16_t *qi = q + (int64_t)i * ldq;
        for (int32_t j = 0; j < key_panels; j++)
        {
            if (rows == ROWS) bf16_tile(ROWS, qi, ldq, kp + (int64_t)j * (d / 2) * COLS * 2, d / 2, STORE_F32, 0, 0, lds, s + j * COLS, 0, 0);
            else bf16_tile(rows, qi, ldq, kp + (int64_t)j * (d / 2) * COLS * 2, d / 2, STORE_F32, 0, 0, lds, s + j * COLS, 0, 0);
        }
        for (int32_t r = 0; r < rows; r++)
        {
            float *sr = s + (int64_t)r * lds;
            uint16_t *pr_r = pr + (int64_t)r * ldp;
            __m512 mx = _mm512_set1_ps(-INFINITY);
            for (int32_t j = 0; j < n; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - j), sr + j));
            __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            __m512 sum = _mm512_setzero_ps();
            for (int32_t j = 0; j < ldp; j += 16)
            {
                __mmask16 keep = tail_mask(n - j), inside = tail_mask(ldp - j);
                __m512 e = _mm512_maskz_mov_ps(keep, bf16_exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(keep, sr + j), m), scale)));
                __m256i eb = (__m256i)_mm512_cvtneps_pbh(e);
                /* the sum of what p·v multiplies: the rounded probabilities */
                sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(eb), 16)));
                _mm256_mask_storeu_epi16(pr_r + j, inside, eb);
            }
            sums[r] = _mm512_reduce_add_ps(sum);
        }
        for (int32_t j = 0; j < dim_panels; j++)
        {
            if (rows == ROWS) bf16_tile(ROWS, pr, ldp, vp + (int64_t)j * key_pairs * COLS * 2, key_pairs, STORE_F32, 0, 0, ldo, o + j * COLS, 0, 0);
            else bf16_tile(rows, pr, ldp, vp + (int64_t)j * key_pairs * COLS * 2, key_pairs, STORE_F32, 0, 0, ldo, o + j * COLS, 0, 0);
        }
        for (int32_t r = 0; r < rows; r++)
        {
            __m512 inv = _mm512_set1_ps(1.0f / sums[r]);
            uint16_t *dst = out + (int64_t)(i + r) * ldout;
            for (int32_t c = 0; c < d; c += 16)
                _mm256_mask_storeu_epi16(dst + c, tail_mask(d - c), (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(o + (int64_t)r * ldo + c), inv)));
        }
    }
}

void svgd_bf16_attention_part(svgd_bf16_attention_job *job, int32_t part, int32_t parts)
{
    (void)part;
    (void)parts;
    int32_t units = job->batch * job->heads;
    /* Each thread takes the next (image, head) from a shared counter rather than a fixed share: a
       thread slowed by its sibling or the hypervisor then takes fewer instead of holding up the team. */
    int32_t u = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
    if (u >= units) return;
    int32_t n = job->tokens, d = job->dim;
    int32_t key_panels = (n + COLS - 1) / COLS, dim_panels = (d + COLS - 1) / COLS, key_pairs = (n + 1) / 2;
    size_t kp_bytes = (size_t)key_panels * COLS * d * 2, vp_bytes = (size_t)dim_panels * COLS * key_pairs * 2 * 2;
    size_t s_bytes = (size_t)ROWS * key_panels * COLS * 4, p_bytes = (size_t)ROWS * key_pairs * 2 * 2 + 64, o_bytes = (size_t)ROWS * dim_panels * COLS * 4;
#define ROUND64(x) (((x) + 63) & ~(size_t)63)
    char *scratch = aligned_alloc(64, ROUND64(kp_bytes) + ROUND64(vp_bytes) + ROUND64(s_bytes) + ROUND64(p_bytes) + ROUND64(o_bytes));
    if (!scratch)
    {
        job->failed = 1;
        return;
    }
    uint16_t *kp = (uint16_t *)scratch, *vp = (uint16_t *)(scratch + ROUND64(kp_bytes));
    float *s = (float *)((char *)vp + ROUND64(vp_bytes));
    uint16_t *pr = (uint16_t *)((char *)s + ROUND64(s_bytes));
    float *o = (float *)((char *)pr + ROUND64(p_bytes));
    for (; u < units; u = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED)) head(job, u / job->heads, u % job->heads, kp, vp, s, pr, o);
    free(scratch);
}
