using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// bf16 self-attention for inference through our C kernel (Native/bf16_attention.c), read straight
/// from the fused qkv projection [B, N, 3·H·D] and written as the proj input [B, N, H·D]: scores and
/// softmax in fp32, probabilities rounded to bf16 before p·v (as libtorch's flash kernel does), one
/// rounding of the output. libtorch's CPU attention runs its products on MKL's fp32 GEMM, which on
/// AMD is a generic path: at the DiT-XL's 256 tokens it was about 15% of a bf16 forward (issue 11).
/// Checked against float64 on first use with a fallback to libtorch; <c>SVGD_BF16_ATTENTION=libtorch</c>
/// turns it off.
/// </summary>
public static unsafe class Bf16Attention
{
    /// <summary>Probabilities and outputs are each rounded to bf16 once: 2^-9 of a value each, with slack.</summary>
    public const double Tolerance = 8e-3;

    /// <summary>The whole row of scores is kept per 14 queries; past this many tokens libtorch's tiled kernel is the better fit.</summary>
    public const int MaxTokens = 8192;

    static readonly Lazy<(string? Reason, IReadOnlyList<KernelCheckResult> Checks)> State = new(Decide);
    static readonly Suspension Suspended = new();

    static string? UnsupportedReason => NativeKernels.Bf16UnsupportedReason;

    public static bool Supported => UnsupportedReason == null;

    /// <summary>Null when bf16 inference attention uses this kernel; otherwise why it runs on libtorch.</summary>
    public static string? DisabledReason => Suspended.Active ? "suspended" : State.Value.Reason;

    public static bool Enabled => DisabledReason == null;

    public static IReadOnlyList<KernelCheckResult> Checks => State.Value.Checks;

    public static string Describe() => DisabledReason switch
    {
        null => $"native AVX512-BF16 (fp32 scores and softmax; checked against float64, max error {Checks.Max(c => c.Error):0.0e0})",
        var reason => $"libtorch: {reason}",
    };

    /// <summary>Routes bf16 attention to libtorch until disposed (benchmarks and tests compare the two).</summary>
    public static IDisposable Suspend() => Suspended.Suspend();

    static (string?, IReadOnlyList<KernelCheckResult>) Decide() => KernelGuard.DecideOwnKernel(
        "SVGD_BF16_ATTENTION", new[] { "auto", "native" }, "libtorch", UnsupportedReason, Check, "bf16 attention stays on libtorch");

    /// <summary>Token counts off the 14-query tile and the 32-key panel (odd ones too), head widths off the 32-channel panel.</summary>
    public static List<KernelCheckResult> Check()
    {
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(0x5eed_a77e);
        var results = new List<KernelCheckResult>();
        foreach (var (b, n, heads, d, threads) in new[] { (2, 16, 4, 64, 2), (1, 37, 3, 72, 2), (3, 5, 2, 8, 1), (1, 256, 2, 72, 1) })
        {
            var qkv = (torch.randn(new long[] { b, n, 3 * heads * d }, generator: g) * 0.5).to(ScalarType.BFloat16);
            var y = Attend(qkv, heads, threads);
            results.Add(new KernelCheckResult("native bf16 attention", $"{b} x {n} tokens, {heads} heads of {d}, {threads} thread{(threads > 1 ? "s" : "")}",
                "bf16", KernelCheck.Error(y, Reference(qkv, heads)), Tolerance));
        }
        return results;
    }

    /// <summary>softmax(q·kᵀ/√d)·v in float64 from the same bf16 qkv, laid out as <see cref="Attend"/>'s result.</summary>
    public static Tensor Reference(Tensor qkv, int heads)
    {
        using var scope = torch.NewDisposeScope();
        long b = qkv.shape[0], n = qkv.shape[1], d = qkv.shape[2] / 3 / heads;
        var parts = qkv.to(ScalarType.Float64).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4);
        var p = torch.softmax(parts[0].matmul(parts[1].transpose(-2, -1)) / Math.Sqrt(d), -1);
        return p.matmul(parts[2]).transpose(1, 2).reshape(b, n, heads * d).MoveToOuterDisposeScope();
    }

    /// <summary>Whether <see cref="Attend"/> takes this qkv projection: bf16 CPU, contiguous [B, N, 3·H·D] with D even, N within <see cref="MaxTokens"/>, no autograd.</summary>
    public static bool Applies(Tensor qkv, int heads) =>
        Enabled && qkv.dtype == ScalarType.BFloat16 && qkv.device_type == DeviceType.CPU && qkv.dim() == 3 && qkv.is_contiguous()
        && qkv.shape[2] % (3 * heads) == 0 && qkv.shape[2] / (3 * heads) % 2 == 0 && qkv.shape[1] is > 0 and <= MaxTokens
        && !(torch.is_grad_enabled() && qkv.requires_grad);

    [StructLayout(LayoutKind.Sequential)]
    internal struct Job
    {
        public ushort* Qkv, Out;
        public int Batch, Tokens, Heads, Dim;
        public float Scale;
        public int Failed;
        /// <summary>The next (image, head), taken by the team's threads from a shared counter (starts at zero).</summary>
        public int Next;
    }

    [UnmanagedCallersOnly]
    static void TeamPart(IntPtr job) => NativeKernels.Bf16AttentionPart(job, OpenMpTeam.Thread, OpenMpTeam.Threads);

    /// <summary>
    /// Attention over the qkv projection <paramref name="qkv"/> [B, N, 3·H·D] (q, k, v, then heads, as
    /// timm lays it out); returns [B, N, H·D] in the caller's dispose scope.
    /// </summary>
    public static Tensor Attend(Tensor qkv, int heads, int threads = 0)
    {
        if (qkv.dtype != ScalarType.BFloat16 || qkv.device_type != DeviceType.CPU || qkv.dim() != 3 || !qkv.is_contiguous()
            || qkv.shape[2] % (3 * heads) != 0 || qkv.shape[2] / (3 * heads) % 2 != 0 || qkv.shape[1] > MaxTokens)
            throw new ArgumentException($"Bf16Attention.Attend: qkv {qkv.dtype} [{string.Join(", ", qkv.shape)}] is not a contiguous bf16 [B, N, 3 x {heads} x even D]");
        if (NativeKernels.Bf16AttentionPart == null) throw new InvalidOperationException(NativeKernels.MissingReason);
        long b = qkv.shape[0], n = qkv.shape[1], c = qkv.shape[2] / 3;
        var y = torch.empty(new[] { b, n, c }, ScalarType.BFloat16);
        if (b * n == 0) return y;
        var job = new Job
        {
            Qkv = (ushort*)LibTorchNative.DataPointer(qkv), Out = (ushort*)LibTorchNative.DataPointer(y),
            Batch = checked((int)b), Tokens = checked((int)n), Heads = heads, Dim = checked((int)(c / heads)),
            Scale = (float)(1.0 / Math.Sqrt(c / heads)),
        };
        if (threads <= 0) threads = Math.Max(1, Math.Min(torch.get_num_threads(), Environment.ProcessorCount));
        int parts = Math.Max(1, Math.Min(threads, job.Batch * heads));
        if (parts == 1) NativeKernels.Bf16AttentionPart((IntPtr)(&job), 0, 1);
        else OpenMpTeam.Run(parts, &TeamPart, (IntPtr)(&job));
        if (job.Failed != 0)
        {
            y.Dispose();
            throw new OutOfMemoryException($"bf16 attention: no memory for the scratch of {n} tokens");
        }
        return y;
    }
}
