using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>The bf16 operands of one DiT block for <see cref="Bf16DiTBlock"/>: packed linears, their biases, the q/k norms.</summary>
/// <param name="QNormWeight">Null without q/k-norm (then all four norm tensors are null).</param>
public sealed record Bf16DiTBlockWeights(
    int Heads, double NormEps, double HeadNormEps,
    PackedBf16Weight Qkv, Tensor? QkvBias, PackedBf16Weight Proj, Tensor? ProjBias,
    PackedBf16Weight Fc1, Tensor? Fc1Bias, PackedBf16Weight Fc2, Tensor? Fc2Bias,
    Tensor? QNormWeight, Tensor? QNormBias, Tensor? KNormWeight, Tensor? KNormBias);

/// <summary>
/// Random bf16 operands of one block for checks and tests: unit-scale tokens, modulation of scale 0.5,
/// weights scaled by 1/√fan-in, small biases, q/k-norm weights near one. The tensors are in the
/// caller's dispose scope; disposing this frees the packed weights.
/// </summary>
public sealed class Bf16DiTBlockOperands : IDisposable
{
    public required Tensor X { get; init; }
    public required Tensor Modulation { get; init; }
    public required Bf16DiTBlockWeights Weights { get; init; }
    /// <summary>The unpacked qkv, proj, fc1 and fc2 weights, for <see cref="Bf16DiTBlock.Reference"/>.</summary>
    public required Tensor[] Raw { get; init; }

    public static Bf16DiTBlockOperands Random(int b, int n, int c, int heads, int hidden, bool qkNorm, Generator g)
    {
        Tensor Bf16(long[] shape, double std) => (torch.randn(shape, generator: g) * std).to(ScalarType.BFloat16);
        var x = Bf16(new long[] { b, n, c }, 1);
        var mod = Bf16(new long[] { b, 6 * c }, 0.5);
        var w = new[] { Bf16(new long[] { 3 * c, c }, 1 / Math.Sqrt(c)), Bf16(new long[] { c, c }, 1 / Math.Sqrt(c)),
            Bf16(new long[] { hidden, c }, 1 / Math.Sqrt(c)), Bf16(new long[] { c, hidden }, 1 / Math.Sqrt(hidden)) };
        var bias = new[] { Bf16(new long[] { 3 * c }, 0.1), Bf16(new long[] { c }, 0.1), Bf16(new long[] { hidden }, 0.1), Bf16(new long[] { c }, 0.1) };
        int d = c / heads;
        var norms = qkNorm ? new[] { Bf16(new long[] { d }, 0.2) + 1, Bf16(new long[] { d }, 0.1), Bf16(new long[] { d }, 0.2) + 1, Bf16(new long[] { d }, 0.1) } : null;
        var packed = w.Select(Bf16Gemm.Pack).ToArray();
        var weights = new Bf16DiTBlockWeights(heads, 1e-6, 1e-5, packed[0], bias[0], packed[1], bias[1], packed[2], bias[2], packed[3], bias[3],
            norms?[0], norms?[1], norms?[2], norms?[3]);
        return new Bf16DiTBlockOperands { X = x, Modulation = mod, Weights = weights, Raw = w };
    }

    public void Dispose()
    {
        Weights.Qkv.Dispose();
        Weights.Proj.Dispose();
        Weights.Fc1.Dispose();
        Weights.Fc2.Dispose();
    }
}

/// <summary>
/// A whole adaLN-Zero DiT block in bf16 inference as one parallel region of our C code
/// (Native/bf16_dit_block.c): the same GEMM and attention kernels as the composed path, the
/// LayerNorms and gated residuals of <see cref="FusedOps"/>, and a spinning barrier between the
/// phases instead of a libtorch or kernel call each. Composed from C#, a DiT-XL block is about ten
/// parallel regions with allocations and dispatch between them, and on the 2-core VM the second
/// thread spent 6-7% of a forward spinning at their boundaries (issue 11). Checked against float64
/// on first use with a fallback to the composed path; <c>SVGD_BF16_BLOCK=composed</c> turns it off.
/// </summary>
public static unsafe class Bf16DiTBlock
{
    /// <summary>
    /// Against float64 through the whole block (every intermediate rounded to bf16 once, eight times
    /// in a row): a few bf16 steps of the output's largest value. A wrong layout is off by O(1).
    /// </summary>
    public const double Tolerance = 1.5e-2;

    static readonly Lazy<(string? Reason, IReadOnlyList<KernelCheckResult> Checks)> State = new(Decide);
    static readonly Suspension Suspended = new();

    static string? UnsupportedReason =>
        NativeKernels.Bf16UnsupportedReason
        ?? (NativeKernels.Bf16DiTBlockJobBytes() != sizeof(Job) ? $"{NativeKernels.FileName} does not match this build (block job size)" : null);

    public static bool Supported => UnsupportedReason == null;

    /// <summary>
    /// Null when bf16 inference DiT blocks take this path; otherwise why they are composed from separate
    /// calls. The block runs the GEMM and attention kernels, so it stands down whenever either does.
    /// </summary>
    public static string? DisabledReason =>
        Suspended.Active ? "suspended"
        : State.Value.Reason ?? Bf16Gemm.DisabledReason.Prefix("bf16 GEMM ") ?? Bf16Attention.DisabledReason.Prefix("bf16 attention ");

    public static bool Enabled => DisabledReason == null;

    public static IReadOnlyList<KernelCheckResult> Checks => State.Value.Checks;

    public static string Describe() => DisabledReason switch
    {
        null => $"one native region per block (checked against float64, max error {Checks.Max(c => c.Error):0.0e0})",
        var reason => $"composed from separate calls: {reason}",
    };

    /// <summary>Composes bf16 blocks from separate calls until disposed (benchmarks and tests compare the two).</summary>
    public static IDisposable Suspend() => Suspended.Suspend();

    static (string?, IReadOnlyList<KernelCheckResult>) Decide() => KernelGuard.DecideOwnKernel(
        "SVGD_BF16_BLOCK", new[] { "auto", "native" }, "composed", UnsupportedReason, Check, "bf16 DiT blocks are composed from separate calls");

    /// <summary>Whether <see cref="Forward"/> takes tokens <paramref name="x"/> [B, N, C]: bf16 CPU, contiguous, even head width, autograd off.</summary>
    public static bool Applies(Tensor x, int heads) =>
        // The shape tests come first: Enabled runs the float64 check on its first call, which fp32 models should not pay for.
        x.dtype == ScalarType.BFloat16 && x.device_type == DeviceType.CPU && x.dim() == 3 && !torch.is_grad_enabled()
        && x.is_contiguous() && x.shape[1] is > 0 and <= Bf16Attention.MaxTokens && x.shape[0] > 0
        && x.shape[2] % heads == 0 && x.shape[2] / heads % 2 == 0 && x.shape[0] * x.shape[1] <= int.MaxValue && Enabled;

    /// <summary>Tokens, heads and widths off the 14-row tile and the 32-column panel; with and without q/k-norm; 1 and 2 threads.</summary>
    public static List<KernelCheckResult> Check()
    {
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var g = new Generator(0x5eed_b10c);
        var results = new List<KernelCheckResult>();
        foreach (var (b, n, c, heads, hidden, qkNorm, threads) in new[]
                 { (2, 16, 64, 4, 256, true, 2), (1, 37, 96, 3, 200, false, 2), (3, 5, 48, 2, 96, true, 1), (1, 29, 72, 1, 288, true, 2) })
        {
            using var scope = torch.NewDisposeScope();
            using var o = Bf16DiTBlockOperands.Random(b, n, c, heads, hidden, qkNorm, g);
            var y = Forward(o.X, o.Modulation, o.Weights, threads);
            results.Add(new KernelCheckResult("native bf16 DiT block", $"{b} x {n} tokens x {c}, {heads} head{(heads > 1 ? "s" : "")}, mlp {hidden}{(qkNorm ? ", q/k-norm" : "")}, {threads} thread{(threads > 1 ? "s" : "")}",
                "bf16", KernelCheck.Error(y, Reference(o.X, o.Modulation, o.Weights, o.Raw)), Tolerance));
        }
        return results;
    }

    /// <summary>The block in float64 from the same bf16 operands (<paramref name="w"/>: the unpacked qkv, proj, fc1 and fc2 weights).</summary>
    public static Tensor Reference(Tensor x, Tensor modulation, Bf16DiTBlockWeights weights, Tensor[] w)
    {
        using var scope = torch.NewDisposeScope();
        Tensor F(Tensor? t) => t is null ? torch.zeros(1, ScalarType.Float64) : t.to(ScalarType.Float64);
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        int heads = weights.Heads;
        long d = c / heads;
        var m = F(modulation).reshape(b, 6, 1, c).unbind(1);
        Tensor Norm(Tensor t, double eps) => nn.functional.layer_norm(t, new[] { t.shape[^1] }, eps: eps);
        var x0 = F(x);
        var h = Norm(x0, weights.NormEps) * (1 + m[1]) + m[0];
        var qkv = (h.matmul(F(w[0]).t()) + F(weights.QkvBias)).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4);
        Tensor q = qkv[0], k = qkv[1], v = qkv[2];
        if (weights.QNormWeight is not null)
        {
            q = Norm(q, weights.HeadNormEps) * F(weights.QNormWeight) + F(weights.QNormBias);
            k = Norm(k, weights.HeadNormEps) * F(weights.KNormWeight) + F(weights.KNormBias);
        }
        var o = torch.softmax(q.matmul(k.transpose(-2, -1)) / Math.Sqrt(d), -1).matmul(v).transpose(1, 2).reshape(b, n, c);
        var x1 = x0 + m[2] * (o.matmul(F(w[1]).t()) + F(weights.ProjBias));
        var h2 = Norm(x1, weights.NormEps) * (1 + m[4]) + m[3];
        var f = nn.functional.gelu(h2.matmul(F(w[2]).t()) + F(weights.Fc1Bias), TorchSharp.Modules.GELU.Approximate.tanh);
        return (x1 + m[5] * (f.matmul(F(w[3]).t()) + F(weights.Fc2Bias))).MoveToOuterDisposeScope();
    }

    [StructLayout(LayoutKind.Sequential)]
    struct Job
    {
        public ushort* X, Out, Mod, QWeight, QBias, KWeight, KBias, H, O;
        public Bf16Gemm.Job Qkv, Proj, Fc1, Fc2;
        public Bf16Attention.Job Attention;
        public int Batch, Tokens, C, Heads;
        public float NormEps, HeadEps;
        public int Arrived, Sense;
    }

    [UnmanagedCallersOnly]
    static void TeamPart(IntPtr job) => NativeKernels.Bf16DiTBlockPart(job, OpenMpTeam.Thread, OpenMpTeam.Threads);

    /// <summary>
    /// The block on tokens <paramref name="x"/> [B, N, C] (bf16, contiguous) with the adaLN output
    /// <paramref name="modulation"/> [B, 6C] (shift, scale, gate for attention, then for the MLP);
    /// returns the block's output [B, N, C] in the caller's dispose scope and leaves x alone.
    /// </summary>
    public static Tensor Forward(Tensor x, Tensor modulation, Bf16DiTBlockWeights w, int threads = 0)
    {
        if (x.dtype != ScalarType.BFloat16 || x.device_type != DeviceType.CPU || x.dim() != 3 || !x.is_contiguous())
            throw new ArgumentException($"Bf16DiTBlock.Forward: x {x.dtype} [{string.Join(", ", x.shape)}] is not contiguous bf16 tokens [B, N, C]");
        long b = x.shape[0], n = x.shape[1], c = x.shape[2], rows = b * n;
        int heads = w.Heads, hidden = w.Fc1.OutFeatures;
        if (c % heads != 0 || c / heads % 2 != 0 || n > Bf16Attention.MaxTokens)
            throw new ArgumentException($"Bf16DiTBlock.Forward: {c} channels in {heads} heads need an even head width and at most {Bf16Attention.MaxTokens} tokens, got {n}");
        if (w.Qkv.InFeatures != c || w.Qkv.OutFeatures != 3 * c || w.Proj.InFeatures != c || w.Proj.OutFeatures != c
            || w.Fc1.InFeatures != c || w.Fc2.InFeatures != hidden || w.Fc2.OutFeatures != c)
            throw new ArgumentException($"Bf16DiTBlock.Forward: linears qkv [{w.Qkv.OutFeatures}, {w.Qkv.InFeatures}], proj [{w.Proj.OutFeatures}, {w.Proj.InFeatures}], fc1 [{w.Fc1.OutFeatures}, {w.Fc1.InFeatures}], fc2 [{w.Fc2.OutFeatures}, {w.Fc2.InFeatures}] do not fit {c} channels");
        if (modulation.dtype != ScalarType.BFloat16 || !modulation.shape.SequenceEqual(new[] { b, 6 * c }))
            throw new ArgumentException($"Bf16DiTBlock.Forward: modulation {modulation.dtype} [{string.Join(", ", modulation.shape)}] is not bf16 [{b}, {6 * c}]");
        Tensor?[] small = { w.QkvBias, w.ProjBias, w.Fc1Bias, w.Fc2Bias, w.QNormWeight, w.QNormBias, w.KNormWeight, w.KNormBias };
        long[] sizes = { 3 * c, c, hidden, c, c / heads, c / heads, c / heads, c / heads };
        for (int i = 0; i < small.Length; i++)
            if (small[i] is { } t && (t.dtype != ScalarType.BFloat16 || t.numel() != sizes[i]))
                throw new ArgumentException($"Bf16DiTBlock.Forward: operand {i} {t.dtype} [{string.Join(", ", t.shape)}] is not {sizes[i]} bf16 values");
        if ((w.QNormWeight is null) != (w.KNormWeight is null) || (w.QNormWeight is null) != (w.QNormBias is null) || (w.QNormWeight is null) != (w.KNormBias is null))
            throw new ArgumentException("Bf16DiTBlock.Forward: give all four q/k-norm tensors or none");
        if (NativeKernels.Bf16DiTBlockPart == null) throw new InvalidOperationException(NativeKernels.MissingReason);

        using var scope = torch.NewDisposeScope();
        var keep = new List<Tensor>();
        ushort* Ptr(Tensor? t)
        {
            if (t is null) return null;
            var tc = t.is_contiguous() ? t : t.contiguous();
            keep.Add(tc);
            return (ushort*)LibTorchNative.DataPointer(tc);
        }
        var y = torch.empty_like(x);
        long mlpOrQkv = Math.Max(3 * c, hidden);
        // h and o [rows, C], then qkv [rows, 3C], which the MLP's hidden layer [rows, hidden] overwrites.
        var workspace = torch.empty(rows * (2 * c + mlpOrQkv), ScalarType.BFloat16);
        ushort* ws = (ushort*)LibTorchNative.DataPointer(workspace);
        ushort* h = ws, o = ws + rows * c, qkv = ws + 2 * rows * c;
        int r = (int)rows, ci = (int)c;
        Bf16Gemm.Job Gemm(ushort* input, PackedBf16Weight weight, Tensor? bias, ushort* output, bool gelu) => new()
        {
            X = input, Panels = weight.Panels, Bias = Ptr(bias), Y = output, M = r, K = weight.InFeatures, N = weight.OutFeatures, GeluTanh = gelu ? 1 : 0,
        };
        var job = new Job
        {
            X = Ptr(x), Out = (ushort*)LibTorchNative.DataPointer(y), Mod = Ptr(modulation),
            QWeight = Ptr(w.QNormWeight), QBias = Ptr(w.QNormBias), KWeight = Ptr(w.KNormWeight), KBias = Ptr(w.KNormBias),
            H = h, O = o,
            Qkv = Gemm(h, w.Qkv, w.QkvBias, qkv, false),
            Proj = Gemm(o, w.Proj, w.ProjBias, h, false),
            Fc1 = Gemm(h, w.Fc1, w.Fc1Bias, qkv, true),
            Fc2 = Gemm(qkv, w.Fc2, w.Fc2Bias, o, false),
            Attention = new Bf16Attention.Job
            {
                Qkv = qkv, Out = o, Batch = (int)b, Tokens = (int)n, Heads = heads, Dim = ci / heads, Scale = (float)(1.0 / Math.Sqrt(c / heads)),
            },
            Batch = (int)b, Tokens = (int)n, C = ci, Heads = heads, NormEps = (float)w.NormEps, HeadEps = (float)w.HeadNormEps,
        };
        if (threads <= 0) threads = Math.Max(1, Math.Min(torch.get_num_threads(), Environment.ProcessorCount));
        if (threads == 1) NativeKernels.Bf16DiTBlockPart((IntPtr)(&job), 0, 1);
        else OpenMpTeam.Run(threads, &TeamPart, (IntPtr)(&job));
        GC.KeepAlive(w);
        if (job.Attention.Failed != 0)
            throw new OutOfMemoryException($"bf16 DiT block: no memory for the attention scratch of {n} tokens");
        return y.MoveToOuterDisposeScope();
    }

    static string? Prefix(this string? reason, string prefix) => reason is null ? null : prefix + reason;
}
