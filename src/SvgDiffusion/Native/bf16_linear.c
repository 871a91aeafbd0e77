/*
 * bf16 y = x·Wᵀ + b on AVX512-BF16 (VDPBF16PS), for inference.
 *
 * Why native: .NET 10 exposes no AVX512-BF16 intrinsics, and libtorch's bf16 linear (MKL's
 * bf16bf16f32 GEMM) reaches about 590 GFLOP/s on a 2-core Zen 5 whose VDPBF16PS peak is about 780.
 * This textbook blocked GEMM reaches 680-750 there on the DiT's shapes (issue 11).
 *
 * Layout. The weight [n, k] is packed once into panels of 32 output features; a panel holds, for
 * each pair of inputs (2p, 2p+1), the 32 features' two weights side by side: [k/2][32][2] bf16,
 * which is exactly the operand VDPBF16PS multiplies against a broadcast pair of x. The last panel
 * is padded with zeros. x rows are read in place, 14 at a time: 14 rows x 2 vectors of 16 outputs =
 * 28 fp32 accumulators, plus 2 for the panel, of the 32 vector registers. Each tile runs the whole
 * k in registers, so the sum is rounded to bf16 once, after the bias (fp32) is added: one rounding,
 * like libtorch's. k must be even (every model's is); the caller routes odd k to libtorch.
 *
 * Threads: the caller runs svgd_bf16_linear_part on each thread of libtorch's OpenMP team. The work
 * is cut into units, a block of panels small enough to stay in L2 meeting every row tile (or, when
 * there are too few panels, a row tile meeting every panel), and each thread takes the next unit
 * from a shared counter until none is left. A fixed half each made the first thread to finish spin
 * at the region's end for the other, slowed by its sibling or by the hypervisor: 3-4% of a DiT-XL
 * forward on the 2-core VM.
 */
#include "bf16_tile.h"
#include "bf16_jobs.h"
/* Panels per block: this many bytes of packed weight stay in L2 while the row tiles pass. */
#define BLOCK_BYTES (288 * 1024)

int64_t svgd_bf16_packed_elements(int32_t n, int32_t k)
{
    return (int64_t)((n + COLS - 1) / COLS) * (k / 2) * COLS * 2;
}

void svgd_bf16_pack(const uint16_t *w, int32_t n, int32_t k, uint16_t *panels)
{
    bf16_pack_rows(w, k, n, k, panels);
}

__attribute__((noinline)) static void tile_full(const uint16_t *x, int64_t ldx, const uint16_t *panel, int32_t pairs,
                                                const uint16_t *bias, uint16_t *y, int64_t ldy, __mmask16 lo, __mmask16 hi)
{
    bf16_tile(ROWS, x, ldx, panel, pairs, STORE_BF16, bias, y, ldy, 0, lo, hi);
}

__attribute__((noinline)) static void tile_edge(int rows, const uint16_t *x, int64_t ldx, const uint16_t *panel, int32_t pairs,
                                                const uint16_t *bias, uint16_t *y, int64_t ldy, __mmask16 lo, __mmask16 hi)
{
    bf16_tile(rows, x, ldx, panel, pairs, STORE_BF16, bias, y, ldy, 0, lo, hi);
}

__attribute__((noinline)) static void tile_full_gelu(const uint16_t *x, int64_t ldx, const uint16_t *panel, int32_t pairs,
                                                     const uint16_t *bias, uint16_t *y, int64_t ldy, __mmask16 lo, __mmask16 hi)
{
    bf16_tile(ROWS, x, ldx, panel, pairs, STORE_BF16_GELU, bias, y, ldy, 0, lo, hi);
}

__attribute__((noinline)) static void tile_edge_gelu(int rows, const uint16_t *x, int64_t ldx, const uint16_t *panel, int32_t pairs,
                                                     const uint16_t *bias, uint16_t *y, int64_t ldy, __mmask16 lo, __mmask16 hi)
{
    bf16_tile(rows, x, ldx, panel, pairs, STORE_BF16_GELU, bias, y, ldy, 0, lo, hi);
}

/* Row tiles [t0, t1) against panels [j0, j1), a block of per_block panels at a time. */
static void block(const svgd_bf16_linear_job *job, int32_t t0, int32_t t1, int32_t j0, int32_t j1, int32_t per_block)
{
    int32_t pairs = job->k / 2;
    for (int32_t jb = j0; jb < j1; jb += per_block)
    {
        int32_t je = jb + per_block < j1 ? jb + per_block : j1;
        for (int32_t t = t0; t < t1; t++)
        {
            int32_t row = t * ROWS, rows = job->m - row < ROWS ? job->m - row : ROWS;
            const uint16_t *x = job->x + (int64_t)row * job->k;
            for (int32_t j = jb; j < je; j++)
            {
                int32_t cols = job->n - j * COLS;
                __mmask16 lo = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
                __mmask16 hi = cols >= 32 ? 0xFFFF : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
                const uint16_t *panel = job->panels + (int64_t)j * pairs * COLS * 2;
                const uint16_t *bias = job->bias ? job->bias + (int64_t)j * COLS : 0;
                uint16_t *y = job->y + (int64_t)row * job->n + (int64_t)j * COLS;
                if (job->gelu_tanh)
                {
                    if (rows == ROWS) tile_full_gelu(x, job->k, panel, pairs, bias, y, job->n, lo, hi);
                    else tile_edge_gelu(rows, x, job->k, panel, pairs, bias, y, job->n, lo, hi);
                }
                else if (rows == ROWS) tile_full(x, job->k, panel, pairs, bias, y, job->n, lo, hi);
                else tile_edge(rows, x, job->k, panel, pairs, bias, y, job->n, lo, hi);
            }
        }
    }
}

void svgd_bf16_linear_part(svgd_bf16_linear_job *job, int32_t part, int32_t parts)
{
    (void)part;
    int32_t tiles = (job->m + ROWS - 1) / ROWS, panels = (job->n + COLS - 1) / COLS;
    int64_t panel_bytes = (int64_t)(job->k / 2) * COLS * 2 * 2;
    int32_t per_block = (int32_t)(BLOCK_BYTES / panel_bytes);
    /* At least four units per thread, so that the last ones to be taken are short. */
    int32_t fair = panels / (4 * (parts > 0 ? parts : 1));
    if (per_block > fair) per_block = fair;
    if (per_block < 1) per_block = 1;
    int32_t blocks = (panels + per_block - 1) / per_block;
    /* The last blocks are taken a quarter of the rows at a time: a thread that finds the counter
       spent then waits for at most a quarter block, not a whole one (DiT-XL: 0.2-0.4 ms each, the
       spin at the region's end had been 2-3% of a forward). Earlier units stay whole: splitting
       every block cost 1-2% in reading the panels twice. */
    int32_t quarters = tiles >= 16 ? 4 : 1;
    int32_t tail = quarters > 1 && blocks >= 4 * parts ? 2 * parts : 0;
    int32_t whole = blocks - tail;
    int32_t units = job->split_rows ? tiles : whole + tail * quarters;
    for (int32_t u = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED); u < units; u = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED))
    {
        if (job->split_rows)
        {
            block(job, u, u + 1, 0, panels, per_block);
            continue;
        }
        int32_t b = u < whole ? u : whole + (u - whole) / quarters, q = u < whole ? 0 : (u - whole) % quarters, n = u < whole ? 1 : quarters;
        int32_t j0 = b * per_block, j1 = j0 + per_block < panels ? j0 + per_block : panels;
        block(job, tiles * q / n, tiles * (q + 1) / n, j0, j1, per_block);
    }
}
