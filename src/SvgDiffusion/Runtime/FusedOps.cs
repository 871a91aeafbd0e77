using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// The DiT block's elementwise work, one pass per step, for inference on fp32 or bf16 tokens:
/// adaLN's <c>LayerNorm(x)·(1 + scale) + shift</c>, the gated residual <c>x + gate·y</c>, the
/// tanh-approximated GELU, and the per-head LayerNorm of queries and keys done in place in the qkv
/// output. Each is three to six libtorch ops (casts to fp32 for the statistics and back, broadcasts,
/// copies to contiguous) that read and write the whole activation; at the bundled DiT's size (2,560
/// tokens x 256) those passes and their dispatch cost more than the GEMMs. Arithmetic is fp32 with one
/// rounding to bf16 at the end, where libtorch's bf16 ops round after every step.
/// The team is libtorch's own OpenMP threads, as for <see cref="Sgemm"/>. Only where autograd records
/// nothing; training keeps libtorch's differentiable ops. <c>SVGD_FUSED=off</c> turns it off.
/// </summary>
public static unsafe class FusedOps
{
    const int Lanes = 16;

    /// <summary>Below this many elements one thread does the pass: waking the second costs more.</summary>
    const long SerialBelow = 1 << 15;

    static readonly Lazy<(string? Reason, IReadOnlyList<KernelCheckResult> Checks)> State = new(Decide);
    static readonly Suspension Suspended = new();

    public static bool Supported => Avx512BW.IsSupported && Vector512.IsHardwareAccelerated && OpenMpTeam.Available;

    /// <summary>Null when the fused kernels are in use; otherwise why the DiT runs libtorch's elementwise ops.</summary>
    public static string? DisabledReason => Suspended.Active ? "suspended" : State.Value.Reason;

    /// <summary>The float64 comparison that decided <see cref="Enabled"/> (empty where it did not run).</summary>
    public static IReadOnlyList<KernelCheckResult> Checks => State.Value.Checks;

    public static bool Enabled => DisabledReason == null;

    /// <summary>One line for doctor and bench.</summary>
    public static string Describe() => DisabledReason is { } why ? $"libtorch ops: {why}" : $"fused AVX-512 kernels (adaLN LayerNorm, gated residual, GELU, q/k norm; checked against float64, max error {Checks.Max(c => c.Error):0.0e0})";

    /// <summary>Routes the DiT to libtorch's ops until disposed (benchmarks and tests compare the two).</summary>
    public static IDisposable Suspend() => Suspended.Suspend();

    static (string?, IReadOnlyList<KernelCheckResult>) Decide() => KernelGuard.DecideOwnKernel(
        "SVGD_FUSED", new[] { "auto", "on" }, "off",
        Supported ? null : Avx512BW.IsSupported ? "libtorch's OpenMP runtime not found" : "no AVX-512 on this CPU",
        Check, "the DiT keeps libtorch's elementwise ops");

    /// <summary>
    /// Each kernel against float64 on the machine it runs on, once per process before first use, on widths
    /// off the 16 lanes and sizes that split across threads (fp32; bf16 only adds the final rounding).
    /// </summary>
    public static List<KernelCheckResult> Check()
    {
        using var inference = torch.inference_mode(false);
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(0x5eed_f05e);
        var results = new List<KernelCheckResult>();
        void Add(string kernel, string what, Tensor actual, Tensor reference) =>
            results.Add(new KernelCheckResult(kernel, what, "fp32", KernelCheck.Error(actual, reference), KernelCheck.Fp32Tolerance));
        foreach (var (b, n, c, heads) in new[] { (2, 5, 72, 1), (3, 200, 256, 4) })
        {
            var x = torch.randn(new long[] { b, n, c }, generator: g) * 2 + 1;
            var y = torch.randn(new long[] { b, n, c }, generator: g);
            var m = torch.randn(new long[] { b, 3 * c }, generator: g).chunk(3, dim: 1);
            var x64 = x.to(ScalarType.Float64);
            var m64 = m.Select(t => t.to(ScalarType.Float64).unsqueeze(1)).ToArray();
            Add("adaLN layer_norm", $"[{b}, {n}, {c}]", ModulatedLayerNorm(x, m[0], m[1], 1e-6),
                nn.functional.layer_norm(x64, new long[] { c }, eps: 1e-6) * (1 + m64[1]) + m64[0]);
            Add("gated residual", $"[{b}, {n}, {c}]", GatedResidual(x, m[2], y, inPlace: false), x64 + m64[2] * y.to(ScalarType.Float64));
            var h = x.clone();
            GeluTanh_(h);
            Add("gelu tanh", $"{h.numel()} values", h, nn.functional.gelu(x64, TorchSharp.Modules.GELU.Approximate.tanh));
            long d = c / heads;
            var qkv = torch.randn(new long[] { b, n, 3 * c }, generator: g);
            var w = torch.randn(new long[] { 4, d }, generator: g);
            var reference = qkv.to(ScalarType.Float64).reshape(b, n, 3, heads, d);
            var q = nn.functional.layer_norm(reference.select(2, 0), new long[] { d }, w[0].to(ScalarType.Float64), w[1].to(ScalarType.Float64), 1e-5);
            var k = nn.functional.layer_norm(reference.select(2, 1), new long[] { d }, w[2].to(ScalarType.Float64), w[3].to(ScalarType.Float64), 1e-5);
            HeadNorm_(qkv, heads, w[0], w[1], w[2], w[3], 1e-5);
            Add("q/k layer_norm", $"[{b}, {n}, 3 x {heads} x {d}]", qkv.reshape(b, n, 3, heads, d).narrow(2, 0, 2), torch.stack(new[] { q, k }, 2));
        }
        return results;
    }

    /// <summary>
    /// Whether <paramref name="tensors"/> can take the fused path: enabled, fp32 or bf16 on the CPU, all
    /// one dtype, and nothing for autograd to record.
    /// </summary>
    public static bool Applies(params Tensor[] tensors)
    {
        if (!Enabled) return false;
        var dtype = tensors[0].dtype;
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16)) return false;
        bool grad = torch.is_grad_enabled();
        foreach (var t in tensors)
            if (t.dtype != dtype || t.device_type != DeviceType.CPU || (grad && t.requires_grad)) return false;
        return true;
    }

    /// <summary><c>LayerNorm(x)·(1 + scale) + shift</c> over the last dimension of x [B, N, C], with [B, C] shift and scale; statistics in fp32, no affine.</summary>
    public static Tensor ModulatedLayerNorm(Tensor x, Tensor shift, Tensor scale, double eps)
    {
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        Expect(shift, b, c, "shift");
        Expect(scale, b, c, "scale");
        using var xc = Contiguous(x);
        using var sh = Fp32(shift);
        using var sc = Fp32(scale);
        var y = torch.empty_like(xc);
        var job = new Job
        {
            Kind = Op.ModulatedNorm, Bf16 = x.dtype == ScalarType.BFloat16, X = Ptr(xc), Out = Ptr(y),
            A = (float*)Ptr(sh), B = (float*)Ptr(sc), Rows = b * n, RowsPerBatch = n, C = c, Eps = (float)eps,
        };
        Run(ref job, x.numel());
        return y;
    }

    /// <summary>
    /// <c>x + gate·y</c> with x, y [B, N, C] and gate [B, C]. With <paramref name="inPlace"/> the sum is
    /// written into x (contiguous) and x is returned; otherwise into a new tensor.
    /// </summary>
    public static Tensor GatedResidual(Tensor x, Tensor gate, Tensor y, bool inPlace)
    {
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        Expect(gate, b, c, "gate");
        if (!y.shape.SequenceEqual(x.shape)) throw new ArgumentException($"FusedOps.GatedResidual: y [{string.Join(", ", y.shape)}] is not x's shape [{string.Join(", ", x.shape)}]");
        if (inPlace && !x.is_contiguous()) throw new ArgumentException("FusedOps.GatedResidual: in place needs a contiguous x");
        using var yc = Contiguous(y);
        using var g = Fp32(gate);
        using var xc = Contiguous(x);
        var o = inPlace ? x : torch.empty_like(xc);
        var job = new Job
        {
            Kind = Op.GatedAdd, Bf16 = x.dtype == ScalarType.BFloat16, X = Ptr(xc), Y = Ptr(yc), Out = Ptr(o),
            A = (float*)Ptr(g), Rows = b * n, RowsPerBatch = n, C = c,
        };
        Run(ref job, x.numel());
        return o;
    }

    /// <summary>The tanh-approximated GELU, in place on a contiguous tensor: <c>u·σ(2·√(2/π)·(u + 0.044715u³))</c>, which equals <c>½u(1 + tanh(...))</c>.</summary>
    public static void GeluTanh_(Tensor h)
    {
        if (!h.is_contiguous()) throw new ArgumentException("FusedOps.GeluTanh_ needs a contiguous tensor");
        long count = h.numel();
        // Rows of 4,096 elements: a unit of work to split between threads.
        const long Row = 4096;
        var job = new Job { Kind = Op.Gelu, Bf16 = h.dtype == ScalarType.BFloat16, X = Ptr(h), Out = Ptr(h), Rows = (count + Row - 1) / Row, C = Row, Count = count };
        Run(ref job, count);
    }

    /// <summary>
    /// LayerNorm (affine, statistics in fp32) over each head's channels of the queries and keys, in place
    /// in the output of the qkv projection [B, N, 3·C] laid out as (q, k, v) x heads x head_dim.
    /// </summary>
    public static void HeadNorm_(Tensor qkv, int heads, Tensor qWeight, Tensor qBias, Tensor kWeight, Tensor kBias, double eps)
    {
        if (!qkv.is_contiguous() || qkv.dim() != 3 || qkv.shape[2] % (3L * heads) != 0)
            throw new ArgumentException($"FusedOps.HeadNorm_ needs a contiguous qkv [B, N, 3*C], got [{string.Join(", ", qkv.shape)}]");
        long d = qkv.shape[2] / (3L * heads);
        using var wq = Fp32(qWeight);
        using var bq = Fp32(qBias);
        using var wk = Fp32(kWeight);
        using var bk = Fp32(kBias);
        foreach (var (t, name) in new[] { (wq, "q weight"), (bq, "q bias"), (wk, "k weight"), (bk, "k bias") })
            if (t.numel() != d) throw new ArgumentException($"FusedOps.HeadNorm_: {name} has {t.numel()} values for head_dim {d}");
        var job = new Job
        {
            Kind = Op.HeadNorm, Bf16 = qkv.dtype == ScalarType.BFloat16, X = Ptr(qkv), Out = Ptr(qkv),
            A = (float*)Ptr(wq), B = (float*)Ptr(bq), A2 = (float*)Ptr(wk), B2 = (float*)Ptr(bk),
            Rows = qkv.shape[0] * qkv.shape[1], C = d, Heads = heads, Eps = (float)eps,
        };
        Run(ref job, 2 * qkv.numel() / 3);
    }

    static void Expect(Tensor t, long b, long c, string name)
    {
        if (t.dim() != 2 || t.shape[0] != b || t.shape[1] != c)
            throw new ArgumentException($"FusedOps: {name} must be [{b}, {c}], got [{string.Join(", ", t.shape)}]");
    }

    static Tensor Contiguous(Tensor t) => t.is_contiguous() ? t.alias() : t.contiguous();

    static Tensor Fp32(Tensor t) => t.to(ScalarType.Float32).contiguous();

    static byte* Ptr(Tensor t) => (byte*)LibTorchNative.DataPointer(t);

    enum Op { ModulatedNorm, GatedAdd, Gelu, HeadNorm }

    /// <summary>One pass's operands, shared by the threads of its parallel region; rows are split between them.</summary>
    struct Job
    {
        public Op Kind;
        public bool Bf16;
        public byte* X, Y, Out;
        public float* A, B, A2, B2;
        public long Rows, RowsPerBatch, C, Count;
        public int Heads;
        public float Eps;

        // Part and Rows_ are fully optimised from the first call: they run once per op, too few calls for tiering to reach them soon.
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public readonly void Part(int t, int parts)
        {
            long lo = Rows * t / parts, hi = Rows * (t + 1) / parts;
            if (Bf16) Rows_<ushort>(lo, hi);
            else Rows_<float>(lo, hi);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        readonly void Rows_<T>(long lo, long hi) where T : unmanaged
        {
            for (long r = lo; r < hi; r++)
            {
                switch (Kind)
                {
                    case Op.ModulatedNorm:
                    {
                        long b = r / RowsPerBatch;
                        float* shift = A + b * C, scale = B + b * C;
                        NormRow((T*)X + r * C, (T*)Out + r * C, C, Eps, scale, shift, 1f);
                        break;
                    }
                    case Op.GatedAdd:
                        GatedRow((T*)X + r * C, (T*)Y + r * C, (T*)Out + r * C, A + r / RowsPerBatch * C, C);
                        break;
                    case Op.Gelu:
                    {
                        long start = r * C, len = Math.Min(C, Count - start);
                        GeluRow((T*)X + start, len);
                        break;
                    }
                    case Op.HeadNorm:
                    {
                        T* row = (T*)X + r * 3 * Heads * C;
                        for (int h = 0; h < Heads; h++)
                        {
                            NormRow(row + h * C, row + h * C, C, Eps, A, B, 0f);
                            NormRow(row + (Heads + h) * C, row + (Heads + h) * C, C, Eps, A2, B2, 0f);
                        }
                        break;
                    }
                }
            }
        }
    }

    [UnmanagedCallersOnly]
    static void TeamPart(IntPtr job) => ((Job*)job)->Part(OpenMpTeam.Thread, OpenMpTeam.Threads);

    static void Run(ref Job job, long elements)
    {
        int threads = elements < SerialBelow ? 1 : (int)Math.Min(job.Rows, Math.Max(1, Math.Min(torch.get_num_threads(), Environment.ProcessorCount)));
        if (threads <= 1) { job.Part(0, 1); return; }
        fixed (Job* p = &job) OpenMpTeam.Run(threads, &TeamPart, (IntPtr)p);
    }

    /// <summary>
    /// One row of LayerNorm: y = (x - mean)·rstd·(one + mul) + add, with mean and variance in two fp32
    /// passes (the one-pass formula cancels badly when the mean is large against the spread).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void NormRow<T>(T* x, T* y, long c, float eps, float* mul, float* add, float one) where T : unmanaged
    {
        long i = 0;
        var acc = Vector512<float>.Zero;
        float tail = 0;
        for (; i + Lanes <= c; i += Lanes) acc += Load(x + i);
        for (; i < c; i++) tail += Scalar(x[i]);
        float mean = (Vector512.Sum(acc) + tail) / c;
        var vm = Vector512.Create(mean);
        acc = Vector512<float>.Zero;
        tail = 0;
        for (i = 0; i + Lanes <= c; i += Lanes) { var d = Load(x + i) - vm; acc = Vector512.FusedMultiplyAdd(d, d, acc); }
        for (; i < c; i++) { float d = Scalar(x[i]) - mean; tail += d * d; }
        float rstd = 1f / MathF.Sqrt((Vector512.Sum(acc) + tail) / c + eps);
        var vr = Vector512.Create(rstd);
        var vone = Vector512.Create(one);
        for (i = 0; i + Lanes <= c; i += Lanes)
        {
            var z = (Load(x + i) - vm) * vr;
            Store(y + i, Vector512.FusedMultiplyAdd(z, vone + Vector512.Load(mul + i), Vector512.Load(add + i)));
        }
        for (; i < c; i++) y[i] = FromScalar<T>((Scalar(x[i]) - mean) * rstd * (one + mul[i]) + add[i]);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void GatedRow<T>(T* x, T* y, T* o, float* gate, long c) where T : unmanaged
    {
        long i = 0;
        for (; i + Lanes <= c; i += Lanes) Store(o + i, Vector512.FusedMultiplyAdd(Vector512.Load(gate + i), Load(y + i), Load(x + i)));
        for (; i < c; i++) o[i] = FromScalar<T>(Scalar(x[i]) + gate[i] * Scalar(y[i]));
    }

    const float GeluK0 = -2f * 0.7978845608028654f, GeluK1 = 0.044715f;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void GeluRow<T>(T* h, long n) where T : unmanaged
    {
        long i = 0;
        var k0 = Vector512.Create(GeluK0);
        var k1 = Vector512.Create(GeluK1);
        var one = Vector512<float>.One;
        for (; i + Lanes <= n; i += Lanes)
        {
            var u = Load(h + i);
            var inner = Vector512.FusedMultiplyAdd(k1 * u, u * u, u);
            Store(h + i, u / (one + Vector512.Exp(k0 * inner)));
        }
        for (; i < n; i++)
        {
            float u = Scalar(h[i]);
            h[i] = FromScalar<T>(u / (1f + MathF.Exp(GeluK0 * (u + GeluK1 * u * u * u))));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Load<T>(T* p) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Vector512.Load((float*)p);
        // bf16 is the top half of an fp32: widen each 16-bit value and shift it up.
        return Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)p)), 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store<T>(T* p, Vector512<float> v) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) { v.Store((float*)p); return; }
        Avx512F.ConvertToVector256UInt16(RoundToBf16Bits(v)).Store((ushort*)p);
    }

    /// <summary>fp32 to bf16 bits (in the low half of each lane), rounding to nearest even as libtorch does; NaN stays a quiet NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<uint> RoundToBf16Bits(Vector512<float> v)
    {
        var bits = v.AsUInt32();
        var rounded = bits + Vector512.Create(0x7FFFu) + ((bits >> 16) & Vector512<uint>.One);
        return Vector512.ConditionalSelect(Vector512.Equals(v, v).AsUInt32(), rounded >> 16, Vector512.Create(0x7FC0u));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Scalar<T>(T v) where T : unmanaged =>
        typeof(T) == typeof(float) ? Unsafe.As<T, float>(ref v) : BitConverter.UInt32BitsToSingle((uint)Unsafe.As<T, ushort>(ref v) << 16);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static T FromScalar<T>(float f) where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return Unsafe.As<float, T>(ref f);
        uint bits = BitConverter.SingleToUInt32Bits(f);
        ushort h = float.IsNaN(f) ? (ushort)0x7FC0 : (ushort)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
        return Unsafe.As<ushort, T>(ref h);
    }
}
