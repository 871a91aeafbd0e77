using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// A weight matrix [out, in] laid out for <see cref="Sgemm"/>: panels of 64 output features, each
/// panel k-major (64 consecutive floats per input feature), the last panel padded with zeros. Packing
/// costs a pass over the weight, so it is done once per weight and kept (see <see cref="SvgDiffusion.Models.Common.PackedWeightSlot"/>).
/// </summary>
public sealed class PackedWeight : IDisposable
{
    internal readonly Tensor Panels;
    public int OutFeatures { get; }
    public int InFeatures { get; }
    internal int PanelCount => (OutFeatures + SgemmKernel.Columns - 1) / SgemmKernel.Columns;

    internal PackedWeight(Tensor panels, int outFeatures, int inFeatures)
    {
        Panels = panels;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
    }

    public void Dispose() => Panels.Dispose();
}

/// <summary>
/// fp32 <c>y = x·Wᵀ + b</c> on AVX-512 for inference. libtorch's fp32 GEMM is MKL's, which on AMD CPUs
/// runs a generic path at about a third of the FMA peak (issue 11: 120-170 GFLOP/s of ~400 on the
/// 2-core Zen 5, where an AVX-512 BLAS reaches twice that). This is the textbook blocked GEMM: weights
/// packed once into 64-wide panels, x read in place six rows at a time, K in blocks of 256 so a panel
/// block (64 KB) stays in L2 while the rows stream past, and the output panels split across libtorch's
/// own OpenMP threads (<see cref="OpenMpTeam"/>).
/// It is checked against float64 on first use in a process and falls back to libtorch, with one warning
/// line, if it is wrong; <c>SVGD_FP32_GEMM=libtorch</c> turns it off.
/// </summary>
public static class Sgemm
{
    /// <summary>K block: 256 k of a 64-wide panel is 64 KB, six rows of x 6 KB.</summary>
    const int KBlock = 256;

    /// <summary>Rows handled per pass over a K block before the next panel: 16 tiles of 6.</summary>
    const int RowBlock = 16 * SgemmKernel.Rows;

    /// <summary>Below this many rows (adaLN's one row per image) the GEMM is a matrix-vector product bound by memory, and libtorch's is as good.</summary>
    public const int MinRows = 4 * SgemmKernel.Rows;

    public static bool Supported => Avx512F.IsSupported && Vector512.IsHardwareAccelerated;

    static readonly Lazy<(string? Reason, IReadOnlyList<KernelCheckResult> Checks)> State = new(Decide);
    static readonly Suspension Suspended = new();

    /// <summary>Null when the packed GEMM is in use; otherwise why fp32 linears run on libtorch.</summary>
    public static string? DisabledReason => Suspended.Active ? "suspended" : State.Value.Reason;

    public static bool Enabled => DisabledReason == null;

    /// <summary>The float64 comparison that decided <see cref="Enabled"/> (empty where it did not run).</summary>
    public static IReadOnlyList<KernelCheckResult> Checks => State.Value.Checks;

    /// <summary>One line for doctor and bench: which fp32 GEMM the linears use.</summary>
    public static string Describe() => DisabledReason switch
    {
        null => $"packed AVX-512 ({SgemmKernel.Rows}x{SgemmKernel.Columns} tiles; checked against float64, max error {Checks.Max(c => c.Error):0.0e0})",
        var reason => $"libtorch (MKL): {reason}",
    };

    /// <summary>Routes fp32 linears to libtorch until disposed (benchmarks compare the two).</summary>
    public static IDisposable Suspend() => Suspended.Suspend();

    static (string?, IReadOnlyList<KernelCheckResult>) Decide() => KernelGuard.DecideOwnKernel(
        "SVGD_FP32_GEMM", new[] { "auto", "packed" }, "libtorch", Supported ? null : "no AVX-512 on this CPU", Check, "fp32 linears stay on libtorch's GEMM");

    /// <summary>
    /// Shapes that reach every edge: rows off the 6-row tile, outputs off the 64-wide panel, K over
    /// one block and not a multiple of it, with and without bias, one and two threads.
    /// </summary>
    public static List<KernelCheckResult> Check()
    {
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(0x5eed_9e11);
        var results = new List<KernelCheckResult>();
        foreach (var (m, k, n, bias, threads) in new[] { (37, 392, 136, true, 2), (100, 1152, 70, false, 2), (6, 64, 64, true, 1), (29, 600, 200, true, 1) })
        {
            var x = torch.randn(new long[] { m, k }, generator: g);
            var w = torch.randn(new long[] { n, k }, generator: g) / Math.Sqrt(k);
            var b = bias ? torch.randn(new long[] { n }, generator: g) : null;
            using var packed = Pack(w);
            var y = Linear(x, packed, b, threads);
            var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
            if (b is not null) reference = reference + b.to(ScalarType.Float64);
            double err = KernelCheck.Error(y, reference);
            results.Add(new KernelCheckResult("packed sgemm", $"{m}x{k} -> {n}{(bias ? " + bias" : "")}, {threads} thread{(threads > 1 ? "s" : "")}", "fp32", err, KernelCheck.Fp32Tolerance));
        }
        return results;
    }

    /// <summary>Packs an fp32 CPU weight [out, in]. The panels are kept out of every dispose scope: the caller owns them.</summary>
    public static PackedWeight Pack(Tensor weight) => Pack(weight, transposed: false);

    /// <summary>
    /// Packs the transpose of an fp32 CPU matrix a [in, out] as a weight [out, in], straight from a's
    /// layout: the backward products (dy·W, dyᵀ·x) need Wᵀ and xᵀ packed, and this saves making them
    /// contiguous first.
    /// </summary>
    public static PackedWeight PackTransposeOf(Tensor a) => Pack(a, transposed: true);

    static PackedWeight Pack(Tensor m, bool transposed)
    {
        if (m.dim() != 2 || m.dtype != ScalarType.Float32 || m.device_type != DeviceType.CPU)
            throw new ArgumentException($"Sgemm.Pack needs a 2-D fp32 CPU matrix, got {m.dtype} [{string.Join(", ", m.shape)}]");
        const int C = SgemmKernel.Columns;
        int n = checked((int)m.shape[transposed ? 1 : 0]), k = checked((int)m.shape[transposed ? 0 : 1]);
        int panels = (n + C - 1) / C;
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        // Pad the output features to whole panels, then lay each panel out k-major: [panels, k, 64].
        var w = m.detach();
        int pad = panels * C - n;
        Tensor packed;
        if (transposed)
        {
            if (pad != 0) w = nn.functional.pad(w, new long[] { 0, pad });
            packed = w.reshape(k, panels, C).permute(1, 0, 2).contiguous();
        }
        else
        {
            if (pad != 0) w = nn.functional.pad(w, new long[] { 0, 0, 0, pad });
            packed = w.reshape(panels, C, k).transpose(1, 2).contiguous();
        }
        return new PackedWeight(packed.DetachFromDisposeScope(), n, k);
    }

    /// <summary>
    /// <c>x·Wᵀ + b</c> for fp32 <paramref name="x"/> [..., in] on the CPU; the result is [..., out] in
    /// the caller's dispose scope, as a libtorch op's would be.
    /// </summary>
    public static unsafe Tensor Linear(Tensor x, PackedWeight w, Tensor? bias, int threads = 0)
    {
        if (x.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || x.shape[^1] != w.InFeatures)
            throw new ArgumentException($"Sgemm.Linear: x {x.dtype} [{string.Join(", ", x.shape)}] does not fit a packed weight [{w.OutFeatures}, {w.InFeatures}]");
        if (bias is not null && (bias.dtype != ScalarType.Float32 || bias.numel() != w.OutFeatures))
            throw new ArgumentException($"Sgemm.Linear: bias {bias.dtype} [{string.Join(", ", bias.shape)}] does not fit {w.OutFeatures} outputs");
        var outShape = x.shape.ToArray();
        outShape[^1] = w.OutFeatures;
        var y = torch.empty(outShape, ScalarType.Float32);
        long rows = x.numel() / w.InFeatures;
        if (rows == 0) return y;
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        Tensor? bc = bias is null || bias.is_contiguous() ? bias : bias.contiguous();
        try
        {
            if (threads <= 0) threads = Math.Max(1, Math.Min(torch.get_num_threads(), Environment.ProcessorCount));
            Multiply((float*)LibTorchNative.DataPointer(xc), checked((int)rows), w,
                bc is null ? null : (float*)LibTorchNative.DataPointer(bc), (float*)LibTorchNative.DataPointer(y), threads);
        }
        finally
        {
            if (!ReferenceEquals(xc, x)) xc.Dispose();
            if (bc is not null && !ReferenceEquals(bc, bias)) bc.Dispose();
        }
        return y;
    }

    /// <summary>One product's operands, shared by the threads of its parallel region.</summary>
    unsafe struct Job
    {
        public float* X, Panels, Bias, Y, Edge;
        public int M, K, N, FullTiles, ColPanels, RowTiles;
        public bool SplitColumns;

        /// <summary>Part <paramref name="t"/> of <paramref name="parts"/>: a run of output panels, or of row tiles.</summary>
        public readonly void Part(int t, int parts)
        {
            int total = SplitColumns ? ColPanels : RowTiles;
            int lo = (int)((long)total * t / parts), hi = (int)((long)total * (t + 1) / parts);
            if (lo >= hi) return;
            if (SplitColumns) Block(X, M, K, N, Panels, Bias, Y, Edge, FullTiles, 0, RowTiles, lo, hi);
            else Block(X, M, K, N, Panels, Bias, Y, Edge, FullTiles, lo, hi, 0, ColPanels);
        }
    }

    [UnmanagedCallersOnly]
    static unsafe void TeamPart(IntPtr job) => ((Job*)job)->Part(OpenMpTeam.Thread, OpenMpTeam.Threads);

    static unsafe void Multiply(float* x, int m, PackedWeight w, float* bias, float* y, int threads)
    {
        const int R = SgemmKernel.Rows;
        int n = w.OutFeatures, k = w.InFeatures;
        var job = new Job
        {
            X = x, Panels = (float*)LibTorchNative.DataPointer(w.Panels), Bias = bias, Y = y,
            M = m, K = k, N = n, FullTiles = m / R, ColPanels = w.PanelCount, RowTiles = (m + R - 1) / R,
        };
        // The last, partial row tile reads from a zero-padded copy so the kernel never reads past x.
        if (job.FullTiles < job.RowTiles)
        {
            job.Edge = (float*)NativeMemory.AllocZeroed((nuint)R * (nuint)k, sizeof(float));
            Buffer.MemoryCopy(x + (long)job.FullTiles * R * k, job.Edge, (long)R * k * sizeof(float), (long)(m - job.FullTiles * R) * k * sizeof(float));
        }
        try
        {
            // Small products do not repay waking a second thread.
            if ((double)m * n * k < 4e6) threads = 1;
            // Split the output panels when there are enough to go round, the row tiles otherwise.
            job.SplitColumns = job.ColPanels >= 2 * threads;
            int parts = Math.Max(1, Math.Min(threads, job.SplitColumns ? job.ColPanels : job.RowTiles));
            if (parts == 1) job.Part(0, 1);
            else if (OpenMpTeam.Available) OpenMpTeam.Run(parts, &TeamPart, (IntPtr)(&job));
            else
            {
                var copy = job;
                System.Threading.Tasks.Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, t => copy.Part(t, parts));
            }
        }
        finally
        {
            if (job.Edge != null) NativeMemory.Free(job.Edge);
        }
    }

    /// <summary>Row tiles [i0, i1) against column panels [j0, j1), K block by K block.</summary>
    static unsafe void Block(float* x, int m, int k, int n, float* panels, float* bias, float* y, float* edge, int fullTiles, int i0, int i1, int j0, int j1)
    {
        const int R = SgemmKernel.Rows, C = SgemmKernel.Columns;
        float* tile = stackalloc float[R * C];
        float* tileBias = stackalloc float[C];
        for (int pc = 0; pc < k; pc += KBlock)
        {
            int kc = Math.Min(KBlock, k - pc);
            var store = pc > 0 ? SgemmKernel.Store.Accumulate : bias != null ? SgemmKernel.Store.OverwriteWithBias : SgemmKernel.Store.Overwrite;
            for (int ib = i0; ib < i1; ib += RowBlock / R)
            {
                int ibEnd = Math.Min(i1, ib + RowBlock / R);
                for (int pj = j0; pj < j1; pj++)
                {
                    float* b = panels + (long)pj * k * C + (long)pc * C;
                    int cols = Math.Min(C, n - pj * C);
                    for (int pi = ib; pi < ibEnd; pi++)
                    {
                        float* a = (pi < fullTiles ? x + (long)pi * R * k : edge) + pc;
                        int rows = Math.Min(R, m - pi * R);
                        float* c = y + (long)pi * R * n + (long)pj * C;
                        if (rows == R && cols == C)
                        {
                            SgemmKernel.Tile(kc, a, k, b, c, n, store, bias + (long)pj * C);
                            continue;
                        }
                        // Edge tile: through a full-size scratch tile, copying only what is inside y.
                        for (int i = 0; i < rows; i++)
                            for (int j = 0; j < cols; j++)
                                tile[i * C + j] = store == SgemmKernel.Store.Accumulate ? c[(long)i * n + j] : 0;
                        for (int j = 0; j < C; j++) tileBias[j] = bias != null && j < cols ? bias[(long)pj * C + j] : 0;
                        SgemmKernel.Tile(kc, a, k, b, tile, C, store, tileBias);
                        for (int i = 0; i < rows; i++)
                            for (int j = 0; j < cols; j++)
                                c[(long)i * n + j] = tile[i * C + j];
                    }
                }
            }
        }
    }
}
