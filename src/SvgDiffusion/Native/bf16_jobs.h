/*
 * The jobs of the bf16 kernels, shared by the files that run them: the GEMM and attention are
 * called on their own from C# and, within one parallel region, by the DiT block (bf16_dit_block.c).
 * The C# mirrors of these structs (Bf16Gemm.Job, Bf16Attention.Job, Bf16DiTBlock.Job) must keep
 * the same field order.
 */
#ifndef SVGD_BF16_JOBS_H
#define SVGD_BF16_JOBS_H

#include <stdint.h>

typedef struct
{
    const uint16_t *x;      /* [m, k], rows contiguous */
    const uint16_t *panels; /* svgd_bf16_pack's output */
    const uint16_t *bias;   /* [n] bf16, or NULL */
    uint16_t *y;            /* [m, n] */
    int32_t m, k, n;
    int32_t split_rows;     /* nonzero: parts divide the row tiles; zero: the panels */
    int32_t gelu_tanh;      /* nonzero: y = gelu_tanh(x·Wᵀ + b), the activation applied before the rounding */
    int32_t next;           /* the next unit of work; zero when the job is handed over */
} svgd_bf16_linear_job;

typedef struct
{
    const uint16_t *qkv; /* [batch, tokens, 3, heads, dim] */
    uint16_t *out;       /* [batch, tokens, heads, dim] */
    int32_t batch, tokens, heads, dim;
    float scale;
    int32_t failed; /* set when a part could not allocate its scratch; the caller raises */
    int32_t next;   /* the next (image, head) to take, shared by the team; zero when handed over */
} svgd_bf16_attention_job;

void svgd_bf16_linear_part(svgd_bf16_linear_job *job, int32_t part, int32_t parts);
void svgd_bf16_attention_part(svgd_bf16_attention_job *job, int32_t part, int32_t parts);

#endif
