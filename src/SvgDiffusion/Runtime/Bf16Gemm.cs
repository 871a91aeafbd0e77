using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// A bf16 weight [out, in] packed for <see cref="Bf16Gemm"/> (32-feature panels of input pairs, the
/// operand layout of VDPBF16PS), in native memory the caller owns. Same size as the weight.
/// </summary>
public sealed unsafe class PackedBf16Weight : IDisposable
{
    internal ushort* Panels { get; private set; }
    public int OutFeatures { get; }
    public int InFeatures { get; }

    internal PackedBf16Weight(ushort* panels, int outFeatures, int inFeatures)
    {
        Panels = panels;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
    }

    public void Dispose()
    {
        if (Panels == null) return;
        NativeMemory.AlignedFree(Panels);
        Panels = null;
        GC.SuppressFinalize(this);
    }

    ~PackedBf16Weight() => Dispose();
}

/// <summary>
/// bf16 <c>y = x·Wᵀ + b</c> for inference on CPUs with AVX512-BF16, through our C kernel
/// (Native/bf16_linear.c): weights packed once, fp32 accumulation over the whole of k, the bias added
/// in fp32 and one rounding to bf16. libtorch's bf16 linear (MKL) reaches about 590 GFLOP/s on the
/// 2-core Zen 5 and this 680-790, of a measured VDPBF16PS peak of 780-840 (issue 11). It also takes
/// the matrix-vector sized products (adaLN's one row per image): reading the packed weight on both
/// cores, 46-53 GB/s against MKL's 18-22 (DiT-XL adaLN, 1152 -> 6912: 0.35 against 0.79 ms). Checked against float64 on
/// first use with a fallback to libtorch; <c>SVGD_BF16_GEMM=libtorch</c> turns it off.
/// </summary>
public static unsafe class Bf16Gemm
{
    /// <summary>Output rounding to bf16 is 2^-9 of a value; a wrong layout or edge is off by O(1).</summary>
    public const double Tolerance = 4e-3;

    static readonly Lazy<(string? Reason, IReadOnlyList<KernelCheckResult> Checks)> State = new(Decide);
    static readonly Suspension Suspended = new();

    public static bool Supported => UnsupportedReason == null;

    static string? UnsupportedReason => NativeKernels.Bf16UnsupportedReason;

    /// <summary>Null when bf16 linears use this GEMM; otherwise why they run on libtorch.</summary>
    public static string? DisabledReason => Suspended.Active ? "suspended" : State.Value.Reason;

    public static bool Enabled => DisabledReason == null;

    public static IReadOnlyList<KernelCheckResult> Checks => State.Value.Checks;

    /// <summary>One line for doctor and bench: which bf16 GEMM the linears use.</summary>
    public static string Describe() => DisabledReason switch
    {
        null => $"packed AVX512-BF16 (native, 14x32 tiles; checked against float64, max error {Checks.Max(c => c.Error):0.0e0})",
        var reason => $"libtorch (MKL): {reason}",
    };

    /// <summary>Routes bf16 linears to libtorch until disposed (benchmarks compare the two).</summary>
    public static IDisposable Suspend() => Suspended.Suspend();

    static (string?, IReadOnlyList<KernelCheckResult>) Decide() => KernelGuard.DecideOwnKernel(
        "SVGD_BF16_GEMM", new[] { "auto", "packed" }, "libtorch", UnsupportedReason, Check, "bf16 linears stay on libtorch's GEMM");

    /// <summary>
    /// Shapes that reach every edge: rows off the 14-row tile, outputs off the 32-wide panel (under 16
    /// and over), one panel block and several, with and without bias, one and two threads.
    /// </summary>
    public static List<KernelCheckResult> Check()
    {
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(0x5eed_bf16);
        var results = new List<KernelCheckResult>();
        foreach (var (m, k, n, bias, threads) in new[] { (37, 392, 136, true, 2), (100, 1152, 70, false, 2), (14, 64, 32, true, 1), (29, 4608, 9, true, 1), (3, 2, 40, true, 2) })
        {
            var x = torch.randn(new long[] { m, k }, generator: g).to(ScalarType.BFloat16);
            var w = (torch.randn(new long[] { n, k }, generator: g) / Math.Sqrt(k)).to(ScalarType.BFloat16);
            var b = bias ? torch.randn(new long[] { n }, generator: g).to(ScalarType.BFloat16) : null;
            using var packed = Pack(w);
            var y = Linear(x, packed, b, threads);
            var reference = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t());
            if (b is not null) reference = reference + b.to(ScalarType.Float64);
            results.Add(new KernelCheckResult("packed bf16 gemm", $"{m}x{k} -> {n}{(bias ? " + bias" : "")}, {threads} thread{(threads > 1 ? "s" : "")}",
                "bf16", KernelCheck.Error(y, reference), Tolerance));
        }
        foreach (var (m, k, n) in new[] { (20, 96, 50) })
        {
            var x = torch.randn(new long[] { m, k }, generator: g).to(ScalarType.BFloat16);
            var w = (torch.randn(new long[] { n, k }, generator: g) * (3 / Math.Sqrt(k))).to(ScalarType.BFloat16);
            var b = torch.randn(new long[] { n }, generator: g).to(ScalarType.BFloat16);
            using var packed = Pack(w);
            var y = Linear(x, packed, b, 2, geluTanh: true);
            var pre = x.to(ScalarType.Float64).matmul(w.to(ScalarType.Float64).t()) + b.to(ScalarType.Float64);
            results.Add(new KernelCheckResult("packed bf16 gemm + gelu", $"{m}x{k} -> {n} + bias, 2 threads", "bf16",
                KernelCheck.Error(y, nn.functional.gelu(pre, TorchSharp.Modules.GELU.Approximate.tanh)), Tolerance));
        }
        return results;
    }

    /// <summary>Whether <see cref="Pack"/> and <see cref="Linear"/> take this weight shape (k must be even: the kernel reads x in pairs).</summary>
    public static bool Fits(Tensor weight) => weight.dim() == 2 && weight.shape[1] % 2 == 0 && weight.shape[0] <= int.MaxValue && weight.shape[1] <= int.MaxValue;

    /// <summary>Packs a bf16 CPU weight [out, in] with an even number of inputs.</summary>
    public static PackedBf16Weight Pack(Tensor weight)
    {
        if (weight.dtype != ScalarType.BFloat16 || weight.device_type != DeviceType.CPU || !Fits(weight))
            throw new ArgumentException($"Bf16Gemm.Pack needs a 2-D bf16 CPU matrix with an even number of columns, got {weight.dtype} [{string.Join(", ", weight.shape)}]");
        if (NativeKernels.Bf16Pack == null) throw new InvalidOperationException(NativeKernels.MissingReason);
        int n = (int)weight.shape[0], k = (int)weight.shape[1];
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var w = weight.detach().contiguous();
        long elements = NativeKernels.Bf16PackedElements(n, k);
        var panels = (ushort*)NativeMemory.AlignedAlloc((nuint)Math.Max(1, elements) * sizeof(ushort), 64);
        NativeKernels.Bf16Pack((ushort*)LibTorchNative.DataPointer(w), n, k, panels);
        return new PackedBf16Weight(panels, n, k);
    }

    /// <summary>The C kernel's register tile (ROWS and COLS in Native/bf16_tile.h): rows of x per tile, outputs per panel.</summary>
    const int TileRows = 14, PanelColumns = 32;

    [StructLayout(LayoutKind.Sequential)]
    internal struct Job
    {
        public ushort* X, Panels, Bias, Y;
        public int M, K, N, SplitRows, GeluTanh;
        /// <summary>The next unit of work, taken by the team's threads from a shared counter (starts at zero).</summary>
        public int Next;
    }

    [UnmanagedCallersOnly]
    static void TeamPart(IntPtr job) => NativeKernels.Bf16LinearPart(job, OpenMpTeam.Thread, OpenMpTeam.Threads);

    /// <summary>
    /// <c>x·Wᵀ + b</c> for bf16 <paramref name="x"/> [..., in] on the CPU; the result [..., out] is in the
    /// caller's dispose scope. With <paramref name="geluTanh"/> the tanh-approximated GELU is applied to
    /// the fp32 sum before its one rounding: the MLP's activation without a pass of its own (on the
    /// DiT-XL's [512, 4608] that pass cost about as much as a third of the product).
    /// </summary>
    public static Tensor Linear(Tensor x, PackedBf16Weight w, Tensor? bias, int threads = 0, bool geluTanh = false)
    {
        if (x.dtype != ScalarType.BFloat16 || x.device_type != DeviceType.CPU || x.shape[^1] != w.InFeatures)
            throw new ArgumentException($"Bf16Gemm.Linear: x {x.dtype} [{string.Join(", ", x.shape)}] does not fit a packed weight [{w.OutFeatures}, {w.InFeatures}]");
        if (bias is not null && (bias.dtype != ScalarType.BFloat16 || bias.numel() != w.OutFeatures))
            throw new ArgumentException($"Bf16Gemm.Linear: bias {bias.dtype} [{string.Join(", ", bias.shape)}] does not fit {w.OutFeatures} outputs");
        if (w.Panels == null) throw new ObjectDisposedException(nameof(PackedBf16Weight));
        var outShape = x.shape.ToArray();
        outShape[^1] = w.OutFeatures;
        var y = torch.empty(outShape, ScalarType.BFloat16);
        long rows = x.numel() / Math.Max(1, w.InFeatures);
        if (rows == 0) return y;
        Tensor xc = x.is_contiguous() ? x : x.contiguous();
        Tensor? bc = bias is null || bias.is_contiguous() ? bias : bias.contiguous();
        try
        {
            var job = new Job
            {
                X = (ushort*)LibTorchNative.DataPointer(xc), Panels = w.Panels,
                Bias = bc is null ? null : (ushort*)LibTorchNative.DataPointer(bc), Y = (ushort*)LibTorchNative.DataPointer(y),
                M = checked((int)rows), K = w.InFeatures, N = w.OutFeatures, GeluTanh = geluTanh ? 1 : 0,
            };
            if (threads <= 0) threads = Math.Max(1, Math.Min(torch.get_num_threads(), Environment.ProcessorCount));
            // Small products do not repay waking a second thread.
            if ((double)job.M * job.N * job.K < 4e6) threads = 1;
            int panels = (job.N + PanelColumns - 1) / PanelColumns, tiles = (job.M + TileRows - 1) / TileRows;
            // Split the output panels when there are enough to go round, the row tiles otherwise.
            job.SplitRows = panels >= 2 * threads ? 0 : 1;
            int parts = Math.Max(1, Math.Min(threads, job.SplitRows != 0 ? tiles : panels));
            if (parts == 1) NativeKernels.Bf16LinearPart((IntPtr)(&job), 0, 1);
            else OpenMpTeam.Run(parts, &TeamPart, (IntPtr)(&job));
        }
        finally
        {
            if (!ReferenceEquals(xc, x)) xc.Dispose();
            if (bc is not null && !ReferenceEquals(bc, bias)) bc.Dispose();
        }
        return y;
    }
}
