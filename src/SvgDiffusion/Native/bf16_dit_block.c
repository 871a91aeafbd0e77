/*
 * A whole DiT block (adaLN-Zero, attention with optional q/k LayerNorm, tanh-GELU MLP) in bf16 for
 * inference, as one parallel region:
 *
 *   h  = LN(x)·(1 + scale_a) + shift_a        rows
 *   qkv = h·Wqkvᵀ + b; q, k = LN_head(q, k)   GEMM, rows
 *   o  = attention(q, k, v)                    (image, head) pairs
 *   out = x + gate_a·(o·Wprojᵀ + b)            GEMM, rows
 *   h  = LN(out)·(1 + scale_m) + shift_m       rows (with the line above)
 *   f  = gelu_tanh(h·W1ᵀ + b1)                 GEMM
 *   out += gate_m·(f·W2ᵀ + b2)                 GEMM, rows
 *
 * Why: composed from C#, the same steps are about ten libtorch and kernel calls per block, each a
 * parallel region of its own with allocations and dispatch between them. On the 2-core VM the
 * second thread spun at the region boundaries for 6-7% of a DiT-XL forward while the first thread
 * dispatched, allocated and waited (issue 11). Here the phases meet at a spinning barrier instead,
 * and the workspace is one buffer from the caller.
 *
 * Numerics are those of the composed path: the GEMMs and attention are the same kernels; LayerNorm
 * statistics are two-pass fp32 sums over the bf16 values, results rounded to bf16 once per step
 * (FusedOps in C#). Only the order of the fp32 sums inside a row differs.
 */
#include <sched.h>
#include "bf16_tile.h"
#include "bf16_jobs.h"

typedef struct
{
    const uint16_t *x;   /* [rows, c] the block's input */
    uint16_t *out;       /* [rows, c] its output */
    const uint16_t *mod; /* [batch, 6c] adaLN: shift, scale, gate for attention, then for the MLP */
    const uint16_t *q_weight, *q_bias, *k_weight, *k_bias; /* [dim] each; NULL without q/k-norm */
    uint16_t *h;         /* [rows, c] workspace: the normalised tokens, then the attention's projection */
    uint16_t *o;         /* [rows, c] workspace: the attention's output, then the MLP's */
    svgd_bf16_linear_job qkv, proj, fc1, fc2; /* operands filled in by the caller; split_rows and next set here */
    svgd_bf16_attention_job attention;
    int32_t batch, tokens, c, heads;
    float norm_eps, head_eps;
    int32_t arrived, sense; /* the barrier; both zero when the job is handed over */
} svgd_bf16_dit_block_job;

static inline __m512 load_bf16(const uint16_t *p, __mmask16 m)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

static inline void store_bf16(uint16_t *p, __m512 v, __mmask16 m)
{
    _mm256_mask_storeu_epi16(p, m, (__m256i)_mm512_cvtneps_pbh(v));
}

static inline __mmask16 lanes(int32_t left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

/* y = (x - mean)·rstd·(one + mul) + add over c channels; mean and variance in two fp32 passes. */
static void norm_row(const uint16_t *x, uint16_t *y, int32_t c, float eps, const uint16_t *mul, const uint16_t *add, float one)
{
    __m512 acc = _mm512_setzero_ps();
    for (int32_t i = 0; i < c; i += 16) acc = _mm512_add_ps(acc, load_bf16(x + i, lanes(c - i)));
    float mean = _mm512_reduce_add_ps(acc) / c;
    __m512 vm = _mm512_set1_ps(mean);
    acc = _mm512_setzero_ps();
    for (int32_t i = 0; i < c; i += 16)
    {
        __mmask16 m = lanes(c - i);
        __m512 d = _mm512_maskz_sub_ps(m, load_bf16(x + i, m), vm);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    float rstd = 1.0f / _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(_mm512_reduce_add_ps(acc) / c + eps)));
    __m512 vr = _mm512_set1_ps(rstd), vone = _mm512_set1_ps(one);
    for (int32_t i = 0; i < c; i += 16)
    {
        __mmask16 m = lanes(c - i);
        __m512 z = _mm512_mul_ps(_mm512_sub_ps(load_bf16(x + i, m), vm), vr);
        store_bf16(y + i, _mm512_fmadd_ps(z, _mm512_add_ps(vone, load_bf16(mul + i, m)), load_bf16(add + i, m)), m);
    }
}

/* out = x + gate·y, rounded to bf16. */
static void gated_row(const uint16_t *x, const uint16_t *y, uint16_t *out, const uint16_t *gate, int32_t c)
{
    for (int32_t i = 0; i < c; i += 16)
    {
        __mmask16 m = lanes(c - i);
        store_bf16(out + i, _mm512_fmadd_ps(load_bf16(gate + i, m), load_bf16(y + i, m), load_bf16(x + i, m)), m);
    }
}

/*
 * A sense-reversing barrier: the last thread to arrive flips the sense the others wait on. They spin
 * (the phases are short), but after a while yield the core: with more threads than cores, the one
 * they wait for may be queued behind them.
 */
static void barrier(svgd_bf16_dit_block_job *job, int32_t parts, int32_t *sense)
{
    if (parts <= 1) return;
    int32_t s = !*sense;
    *sense = s;
    if (__atomic_add_fetch(&job->arrived, 1, __ATOMIC_ACQ_REL) == parts)
    {
        __atomic_store_n(&job->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&job->sense, s, __ATOMIC_RELEASE);
        return;
    }
    for (int32_t spins = 0; __atomic_load_n(&job->sense, __ATOMIC_ACQUIRE) != s; spins++)
        if (spins < 20000) _mm_pause();
        else sched_yield();
}

static void split(svgd_bf16_linear_job *gemm, int32_t parts)
{
    int32_t panels = (gemm->n + COLS - 1) / COLS;
    gemm->split_rows = panels >= 2 * parts ? 0 : 1;
}

void svgd_bf16_dit_block_part(svgd_bf16_dit_block_job *job, int32_t part, int32_t parts)
{
    int32_t c = job->c, rows = job->batch * job->tokens, dim = c / job->heads;
    int32_t lo = (int32_t)((int64_t)rows * part / parts), hi = (int32_t)((int64_t)rows * (part + 1) / parts);
    int32_t sense = 0;
    if (part == 0)
    {
        split(&job->qkv, parts);
        split(&job->proj, parts);
        split(&job->fc1, parts);
        split(&job->fc2, parts);
    }
    for (int32_t r = lo; r < hi; r++)
    {
        const uint16_t *m = job->mod + (int64_t)(r / job->tokens) * 6 * c;
        norm_row(job->x + (int64_t)r * c, job->h + (int64_t)r * c, c, job->norm_eps, m + c, m, 1.0f);
    }
    barrier(job, parts, &sense);
    svgd_bf16_linear_part(&job->qkv, part, parts);
    barrier(job, parts, &sense);
    if (job->q_weight)
    {
        for (int32_t r = lo; r < hi; r++)
        {
            uint16_t *row = job->qkv.y + (int64_t)r * 3 * c;
            for (int32_t h = 0; h < job->heads; h++)
            {
                norm_row(row + h * dim, row + h * dim, dim, job->head_eps, job->q_weight, job->q_bias, 0.0f);
                norm_row(row + c + h * dim, row + c + h * dim, dim, job->head_eps, job->k_weight, job->k_bias, 0.0f);
            }
        }
        barrier(job, parts, &sense);
    }
    svgd_bf16_attention_part(&job->attention, part, parts);
    barrier(job, parts, &sense);
    svgd_bf16_linear_part(&job->proj, part, parts);
    barrier(job, parts, &sense);
    for (int32_t r = lo; r < hi; r++)
    {
        const uint16_t *m = job->mod + (int64_t)(r / job->tokens) * 6 * c;
        uint16_t *out = job->out + (int64_t)r * c, *h = job->h + (int64_t)r * c;
        /* h holds this row's projection until the norm below overwrites it */
        gated_row(job->x + (int64_t)r * c, h, out, m + 2 * c, c);
        norm_row(out, h, c, job->norm_eps, m + 4 * c, m + 3 * c, 1.0f);
    }
    barrier(job, parts, &sense);
    svgd_bf16_linear_part(&job->fc1, part, parts);
    barrier(job, parts, &sense);
    svgd_bf16_linear_part(&job->fc2, part, parts);
    barrier(job, parts, &sense);
    for (int32_t r = lo; r < hi; r++)
    {
        const uint16_t *m = job->mod + (int64_t)(r / job->tokens) * 6 * c;
        uint16_t *out = job->out + (int64_t)r * c;
        gated_row(out, job->o + (int64_t)r * c, out, m + 5 * c, c);
    }
}

/* The job's size, which the C# mirror (Bf16DiTBlock.Job) checks before the first call. */
int64_t svgd_bf16_dit_block_job_bytes(void) { return (int64_t)sizeof(svgd_bf16_dit_block_job); }
