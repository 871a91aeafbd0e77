using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SvgDiffusion.Runtime;

/// <summary>
/// The 6x64 register tile of <see cref="Sgemm"/>: six rows of x, each broadcast one value at a time,
/// against four 16-lane vectors of a packed weight panel, summed into 24 zmm accumulators. With the
/// four panel vectors and a broadcast that is 29 of the 32 AVX-512 registers, and 10 loads per 24
/// FMAs, which two load ports feed while both FMA ports stay busy. The tile is written out by hand
/// because the JIT keeps named locals in registers but not the elements of an array or span.
/// </summary>
static class SgemmKernel
{
    public const int Rows = 6;
    public const int Columns = 64;

    /// <summary>How the tile meets C: overwrite, add to what is there (later K blocks), or overwrite with the bias added.</summary>
    public enum Store { Overwrite = 0, Accumulate = 1, OverwriteWithBias = 2 }

    /// <param name="kc">Depth of this K block.</param>
    /// <param name="a">First x value of the block's first row; rows are <paramref name="lda"/> floats apart.</param>
    /// <param name="b">Packed weight panel at the block's first k: 64 floats per k.</param>
    /// <param name="c">Top-left of the 6x64 output tile; rows <paramref name="ldc"/> floats apart.</param>
    /// <param name="bias">64 bias values, read only for <see cref="Store.OverwriteWithBias"/>.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Tile(int kc, float* a, long lda, float* b, float* c, long ldc, Store store, float* bias)
    {
        Vector512<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector512<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector512<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector512<float> c30 = default, c31 = default, c32 = default, c33 = default;
        Vector512<float> c40 = default, c41 = default, c42 = default, c43 = default;
        Vector512<float> c50 = default, c51 = default, c52 = default, c53 = default;
        float* a0 = a, a1 = a + 1 * lda, a2 = a + 2 * lda, a3 = a + 3 * lda, a4 = a + 4 * lda, a5 = a + 5 * lda;
        for (int k = 0; k < kc; k++, b += Columns)
        {
            Vector512<float> b0 = Vector512.Load(b + 0), b1 = Vector512.Load(b + 16), b2 = Vector512.Load(b + 32), b3 = Vector512.Load(b + 48);
            Vector512<float> x;
            x = Vector512.Create(a0[k]);
            c00 = Avx512F.FusedMultiplyAdd(x, b0, c00); c01 = Avx512F.FusedMultiplyAdd(x, b1, c01); c02 = Avx512F.FusedMultiplyAdd(x, b2, c02); c03 = Avx512F.FusedMultiplyAdd(x, b3, c03);
            x = Vector512.Create(a1[k]);
            c10 = Avx512F.FusedMultiplyAdd(x, b0, c10); c11 = Avx512F.FusedMultiplyAdd(x, b1, c11); c12 = Avx512F.FusedMultiplyAdd(x, b2, c12); c13 = Avx512F.FusedMultiplyAdd(x, b3, c13);
            x = Vector512.Create(a2[k]);
            c20 = Avx512F.FusedMultiplyAdd(x, b0, c20); c21 = Avx512F.FusedMultiplyAdd(x, b1, c21); c22 = Avx512F.FusedMultiplyAdd(x, b2, c22); c23 = Avx512F.FusedMultiplyAdd(x, b3, c23);
            x = Vector512.Create(a3[k]);
            c30 = Avx512F.FusedMultiplyAdd(x, b0, c30); c31 = Avx512F.FusedMultiplyAdd(x, b1, c31); c32 = Avx512F.FusedMultiplyAdd(x, b2, c32); c33 = Avx512F.FusedMultiplyAdd(x, b3, c33);
            x = Vector512.Create(a4[k]);
            c40 = Avx512F.FusedMultiplyAdd(x, b0, c40); c41 = Avx512F.FusedMultiplyAdd(x, b1, c41); c42 = Avx512F.FusedMultiplyAdd(x, b2, c42); c43 = Avx512F.FusedMultiplyAdd(x, b3, c43);
            x = Vector512.Create(a5[k]);
            c50 = Avx512F.FusedMultiplyAdd(x, b0, c50); c51 = Avx512F.FusedMultiplyAdd(x, b1, c51); c52 = Avx512F.FusedMultiplyAdd(x, b2, c52); c53 = Avx512F.FusedMultiplyAdd(x, b3, c53);
        }
        switch (store)
        {
            case Store.Overwrite:
                Vector512.Store(c00, c + 0 * ldc + 0); Vector512.Store(c01, c + 0 * ldc + 16); Vector512.Store(c02, c + 0 * ldc + 32); Vector512.Store(c03, c + 0 * ldc + 48);
                Vector512.Store(c10, c + 1 * ldc + 0); Vector512.Store(c11, c + 1 * ldc + 16); Vector512.Store(c12, c + 1 * ldc + 32); Vector512.Store(c13, c + 1 * ldc + 48);
                Vector512.Store(c20, c + 2 * ldc + 0); Vector512.Store(c21, c + 2 * ldc + 16); Vector512.Store(c22, c + 2 * ldc + 32); Vector512.Store(c23, c + 2 * ldc + 48);
                Vector512.Store(c30, c + 3 * ldc + 0); Vector512.Store(c31, c + 3 * ldc + 16); Vector512.Store(c32, c + 3 * ldc + 32); Vector512.Store(c33, c + 3 * ldc + 48);
                Vector512.Store(c40, c + 4 * ldc + 0); Vector512.Store(c41, c + 4 * ldc + 16); Vector512.Store(c42, c + 4 * ldc + 32); Vector512.Store(c43, c + 4 * ldc + 48);
                Vector512.Store(c50, c + 5 * ldc + 0); Vector512.Store(c51, c + 5 * ldc + 16); Vector512.Store(c52, c + 5 * ldc + 32); Vector512.Store(c53, c + 5 * ldc + 48);
                break;
            case Store.Accumulate:
                Vector512.Store(c00 + Vector512.Load(c + 0 * ldc + 0), c + 0 * ldc + 0); Vector512.Store(c01 + Vector512.Load(c + 0 * ldc + 16), c + 0 * ldc + 16); Vector512.Store(c02 + Vector512.Load(c + 0 * ldc + 32), c + 0 * ldc + 32); Vector512.Store(c03 + Vector512.Load(c + 0 * ldc + 48), c + 0 * ldc + 48);
                Vector512.Store(c10 + Vector512.Load(c + 1 * ldc + 0), c + 1 * ldc + 0); Vector512.Store(c11 + Vector512.Load(c + 1 * ldc + 16), c + 1 * ldc + 16); Vector512.Store(c12 + Vector512.Load(c + 1 * ldc + 32), c + 1 * ldc + 32); Vector512.Store(c13 + Vector512.Load(c + 1 * ldc + 48), c + 1 * ldc + 48);
                Vector512.Store(c20 + Vector512.Load(c + 2 * ldc + 0), c + 2 * ldc + 0); Vector512.Store(c21 + Vector512.Load(c + 2 * ldc + 16), c + 2 * ldc + 16); Vector512.Store(c22 + Vector512.Load(c + 2 * ldc + 32), c + 2 * ldc + 32); Vector512.Store(c23 + Vector512.Load(c + 2 * ldc + 48), c + 2 * ldc + 48);
                Vector512.Store(c30 + Vector512.Load(c + 3 * ldc + 0), c + 3 * ldc + 0); Vector512.Store(c31 + Vector512.Load(c + 3 * ldc + 16), c + 3 * ldc + 16); Vector512.Store(c32 + Vector512.Load(c + 3 * ldc + 32), c + 3 * ldc + 32); Vector512.Store(c33 + Vector512.Load(c + 3 * ldc + 48), c + 3 * ldc + 48);
                Vector512.Store(c40 + Vector512.Load(c + 4 * ldc + 0), c + 4 * ldc + 0); Vector512.Store(c41 + Vector512.Load(c + 4 * ldc + 16), c + 4 * ldc + 16); Vector512.Store(c42 + Vector512.Load(c + 4 * ldc + 32), c + 4 * ldc + 32); Vector512.Store(c43 + Vector512.Load(c + 4 * ldc + 48), c + 4 * ldc + 48);
                Vector512.Store(c50 + Vector512.Load(c + 5 * ldc + 0), c + 5 * ldc + 0); Vector512.Store(c51 + Vector512.Load(c + 5 * ldc + 16), c + 5 * ldc + 16); Vector512.Store(c52 + Vector512.Load(c + 5 * ldc + 32), c + 5 * ldc + 32); Vector512.Store(c53 + Vector512.Load(c + 5 * ldc + 48), c + 5 * ldc + 48);
                break;
            default:
                {
                    Vector512<float> d0 = Vector512.Load(bias + 0), d1 = Vector512.Load(bias + 16), d2 = Vector512.Load(bias + 32), d3 = Vector512.Load(bias + 48);
                    Vector512.Store(c00 + d0, c + 0 * ldc + 0); Vector512.Store(c01 + d1, c + 0 * ldc + 16); Vector512.Store(c02 + d2, c + 0 * ldc + 32); Vector512.Store(c03 + d3, c + 0 * ldc + 48);
                    Vector512.Store(c10 + d0, c + 1 * ldc + 0); Vector512.Store(c11 + d1, c + 1 * ldc + 16); Vector512.Store(c12 + d2, c + 1 * ldc + 32); Vector512.Store(c13 + d3, c + 1 * ldc + 48);
                    Vector512.Store(c20 + d0, c + 2 * ldc + 0); Vector512.Store(c21 + d1, c + 2 * ldc + 16); Vector512.Store(c22 + d2, c + 2 * ldc + 32); Vector512.Store(c23 + d3, c + 2 * ldc + 48);
                    Vector512.Store(c30 + d0, c + 3 * ldc + 0); Vector512.Store(c31 + d1, c + 3 * ldc + 16); Vector512.Store(c32 + d2, c + 3 * ldc + 32); Vector512.Store(c33 + d3, c + 3 * ldc + 48);
                    Vector512.Store(c40 + d0, c + 4 * ldc + 0); Vector512.Store(c41 + d1, c + 4 * ldc + 16); Vector512.Store(c42 + d2, c + 4 * ldc + 32); Vector512.Store(c43 + d3, c + 4 * ldc + 48);
                    Vector512.Store(c50 + d0, c + 5 * ldc + 0); Vector512.Store(c51 + d1, c + 5 * ldc + 16); Vector512.Store(c52 + d2, c + 5 * ldc + 32); Vector512.Store(c53 + d3, c + 5 * ldc + 48);
                    break;
                }
        }
    }
}
