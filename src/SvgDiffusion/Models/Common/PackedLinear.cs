using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// <c>nn.Linear</c> — same parameters, initialisation and state-dict keys — whose fp32 products run
/// on <see cref="Sgemm"/>'s packed AVX-512 GEMM instead of libtorch's (MKL's, slow on AMD): inference
/// directly, training through an autograd function whose backward uses the same GEMM. bf16 inference
/// runs on <see cref="Bf16Gemm"/> where the CPU has AVX512-BF16. Other dtypes, fp32 matrix-vector
/// sized inputs, bf16 training and bias-free fp32 training take libtorch's linear.
/// </summary>
public sealed class PackedLinear : Module<Tensor, Tensor>
{
    [ComponentName(Name = "weight")]
    Parameter _weight;
    [ComponentName(Name = "bias")]
    Parameter? _bias;
    readonly PackedWeightSlot _packed = new();

    public PackedLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("Linear")
    {
        if (WeightInit.Skipping)
        {
            _weight = new Parameter(torch.empty(outFeatures, inFeatures));
            if (hasBias) _bias = new Parameter(torch.empty(outFeatures));
        }
        else
        {
            // Drawn by nn.Linear itself so seeded models start from the same weights as before.
            // The detached views are disposed here: left to the GC they would keep the initial weights'
            // storage alive beside the copies (2.7 GB for SVG-XL) until a collection, which native memory does not prompt.
            using var init = torch.nn.Linear(inFeatures, outFeatures, hasBias);
            using (var w = init.weight!.detach()) _weight = new Parameter(w.clone());
            if (hasBias)
                using (var b = init.bias!.detach()) _bias = new Parameter(b.clone());
        }
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        RegisterComponents();
    }

    public long InFeatures { get; }
    public long OutFeatures { get; }

#pragma warning disable IDE1006 // nn.Linear's names, so code written against it reads the same
    // Settable, as nn.Linear's are: Module.to(dtype) puts the converted parameters back through them.
    public Parameter weight
    {
        get => _weight;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            if (value.Handle == _weight.Handle) return;
            _weight.Dispose();
            _weight = (Parameter)value.DetachFromDisposeScope();
            ConditionallyRegisterParameter("weight", _weight);
        }
    }

    public Parameter? bias
    {
        get => _bias;
        set
        {
            if (value?.Handle == _bias?.Handle) return;
            _bias?.Dispose();
            _bias = (Parameter?)value?.DetachFromDisposeScope();
            ConditionallyRegisterParameter("bias", _bias);
        }
    }
#pragma warning restore IDE1006

    public override Tensor forward(Tensor x) => _packed.Linear(x, _weight, _bias);

    /// <summary>
    /// <c>gelu_tanh(linear(x))</c> in one pass where the bf16 GEMM takes this product (its epilogue applies
    /// the activation in fp32); null where it does not, and the caller applies the activation itself.
    /// </summary>
    public Tensor? ForwardGeluTanhFused(Tensor x) => _packed.LinearGeluTanh(x, _weight, _bias);

    /// <summary>How many times the weight was packed: once while it is unchanged, again after each write.</summary>
    public int PackCount => _packed.PackCount;

    /// <summary>Drops the packed copy kept for inference (as much memory as the weight); the next inference forward packs again.</summary>
    public void ReleasePacked() => _packed.Release();

    /// <summary>Drops the packed copies of every <see cref="PackedLinear"/> in <paramref name="module"/>: for models
    /// that stay loaded but will not run inference again soon (an EMA between preview grids).</summary>
    public static void ReleasePacked(Module module)
    {
        foreach (var m in module.modules().OfType<PackedLinear>()) m.ReleasePacked();
        if (module is PackedLinear self) self.ReleasePacked();
    }

    /// <summary>The packed bf16 weight when this linear runs on the bf16 GEMM in inference; null otherwise (see <see cref="Bf16DiTBlock"/>).</summary>
    internal PackedBf16Weight? InferenceBf16Weight() => _packed.InferenceBf16Weight(_weight, _bias);

    protected override void Dispose(bool disposing)
    {
        if (disposing) _packed.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// One weight's packed copy, kept while the weight is unchanged: same tensor object, same storage,
/// same version counter. An optimizer step, an EMA update or a state-dict load writes the weight in
/// place and bumps its version, so the next forward repacks; a dtype or device move makes a new
/// tensor. The copy costs as much memory as the weight.
/// </summary>
public sealed class PackedWeightSlot : IDisposable
{
    readonly object _gate = new();
    IDisposable? _packed;
    Tensor? _source;
    IntPtr _data;
    long _version;

    /// <summary>How many times a weight was packed into this slot.</summary>
    public int PackCount { get; private set; }

    enum Route { LibTorch, Inference, Training, InferenceBf16 }

    /// <summary><c>linear(x, weight, bias)</c>, on the packed GEMM where it applies.</summary>
    public Tensor Linear(Tensor x, Tensor weight, Tensor? bias) => Choose(x, weight, bias) switch
    {
        Route.Inference => Sgemm.Linear(x, Get(weight, Sgemm.Pack), bias),
        Route.Training => TrainingLinear(x, weight, bias!),
        Route.InferenceBf16 => Bf16Gemm.Linear(x, Get(weight, Bf16Gemm.Pack), bias),
        _ => functional.linear(x, weight, bias),
    };

    /// <summary>
    /// The training product: the weight changes at every optimizer step, so its packed copy is of no use after
    /// this forward and is not kept (for SVG-XL that is 2.7 GB held between steps for nothing). A copy kept by an
    /// inference forward of the same weight version is used and released.
    /// </summary>
    Tensor TrainingLinear(Tensor x, Tensor weight, Tensor bias)
    {
        PackedLinearFunction.ReleaseReturned();
        using var packed = Take(weight, Sgemm.Pack);
        return PackedLinearFunction.apply(x, weight, bias, packed);
    }

    /// <summary><c>gelu_tanh(linear(x, weight, bias))</c> on the bf16 GEMM, or null where that route does not apply.</summary>
    public Tensor? LinearGeluTanh(Tensor x, Tensor weight, Tensor? bias) =>
        Choose(x, weight, bias) == Route.InferenceBf16 ? Bf16Gemm.Linear(x, Get(weight, Bf16Gemm.Pack), bias, geluTanh: true) : null;

    static Route Choose(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dtype == ScalarType.BFloat16) return ChooseBf16(x, weight, bias);
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU) return Route.LibTorch;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || bias.device_type != DeviceType.CPU)) return Route.LibTorch;
        if (x.dim() == 0 || weight.dim() != 2 || x.shape[^1] != weight.shape[1]) return Route.LibTorch; // libtorch words the error
        if (x.numel() / Math.Max(1, weight.shape[1]) < Sgemm.MinRows) return Route.LibTorch;
        // Inference tensors have no version counter to tell a changed weight by.
        if (LibTorchNative.IsInference(weight) || !Sgemm.Enabled) return Route.LibTorch;
        bool grad = torch.is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true);
        if (!grad) return Route.Inference;
        return bias is null || x.dim() < 2 ? Route.LibTorch : Route.Training;
    }

    static Route ChooseBf16(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.device_type != DeviceType.CPU || !Bf16Operands(weight, bias)) return Route.LibTorch;
        if (x.dim() == 0 || x.shape[^1] != weight.shape[1]) return Route.LibTorch;
        bool grad = torch.is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true);
        return grad ? Route.LibTorch : Route.InferenceBf16;
    }

    /// <summary>Whether the bf16 GEMM takes this weight and bias (bf16 on the CPU, an even number of inputs, the kernel enabled).</summary>
    static bool Bf16Operands(Tensor weight, Tensor? bias)
    {
        if (weight.dtype != ScalarType.BFloat16 || weight.device_type != DeviceType.CPU) return false;
        if (bias is not null && (bias.dtype != ScalarType.BFloat16 || bias.device_type != DeviceType.CPU || bias.numel() != weight.shape[0])) return false;
        return Bf16Gemm.Fits(weight) && !LibTorchNative.IsInference(weight) && Bf16Gemm.Enabled;
    }

    /// <summary>The packed bf16 weight where this linear would run on the bf16 GEMM with autograd off; null elsewhere.</summary>
    public PackedBf16Weight? InferenceBf16Weight(Tensor weight, Tensor? bias) =>
        !torch.is_grad_enabled() && Bf16Operands(weight, bias) ? Get(weight, Bf16Gemm.Pack) : null;

    T Get<T>(Tensor weight, Func<Tensor, T> pack) where T : class, IDisposable
    {
        IntPtr data = LibTorchNative.DataPointer(weight);
        long version = LibTorchNative.Version(weight);
        lock (_gate)
        {
            if (_packed is T kept && ReferenceEquals(_source, weight) && _data == data && _version == version) return kept;
            _packed?.Dispose();
            _packed = null;
            var packed = pack(weight);
            _packed = packed;
            PackCount++;
            (_source, _data, _version) = (weight, data, version);
            return packed;
        }
    }

    /// <summary>The packed copy of this weight version for the caller to dispose: the kept one if it matches (the slot lets it go), else a new one.</summary>
    T Take<T>(Tensor weight, Func<Tensor, T> pack) where T : class, IDisposable
    {
        IntPtr data = LibTorchNative.DataPointer(weight);
        long version = LibTorchNative.Version(weight);
        lock (_gate)
        {
            var kept = _packed;
            bool match = kept is T && ReferenceEquals(_source, weight) && _data == data && _version == version;
            _packed = null;
            _source = null;
            if (match) return (T)kept!;
            kept?.Dispose();
            PackCount++;
            return pack(weight);
        }
    }

    /// <summary>Drops the packed copy, if any (the next inference forward packs again).</summary>
    public void Release() => Dispose();

    public void Dispose()
    {
        lock (_gate)
        {
            _packed?.Dispose();
            _packed = null;
            _source = null;
        }
    }
}

/// <summary>
/// The packed linear with its backward on the same GEMM: dx = dy·W (Wᵀ packed per call) and
/// dW = dyᵀ·x (xᵀ packed). Training writes the weight every step, so every
/// forward repacks it; the packing is a copy, small next to the three products.
/// </summary>
sealed class PackedLinearFunction : torch.autograd.SingleTensorFunction<PackedLinearFunction>
{
    public override string Name => "PackedLinear";

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, weight, bias, packed) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (PackedWeight)vars[3]);
        ctx.save_for_backward(new List<Tensor> { x, weight });
        return Sgemm.Linear(x, packed, bias);
    }

    /// <summary>
    /// The gradients the last backward on this thread returned. TorchSharp hands their handles to the engine but
    /// keeps the C# tensors, so in a dispose scope they would live until the training step ends: every weight's
    /// gradient a second time (2.5 GB for SVG-XL at the end of the backward), and on the first step the engine
    /// copies a gradient it cannot take over. The engine holds its own references once a backward has
    /// returned, so each backward (and each training forward) releases the previous one's.
    /// </summary>
    [ThreadStatic] static List<Tensor>? _returned;

    internal static void ReleaseReturned()
    {
        if (_returned is not { Count: > 0 } r) return;
        foreach (var t in r) t.Dispose();
        r.Clear();
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput)
    {
        ReleaseReturned();
        using var scope = torch.NewDisposeScope();
        var saved = ctx.get_saved_variables();
        var (x, weight) = (saved[0], saved[1]);
        long n = weight.shape[0], k = weight.shape[1];
        var dy = gradOutput.reshape(-1, n);
        var x2 = x.reshape(-1, k);
        Tensor dx, dw;
        using (var weightT = Sgemm.PackTransposeOf(weight))
            dx = Sgemm.Linear(dy, weightT, null).reshape(x.shape);
        using (var xT = Sgemm.PackTransposeOf(x2))
            dw = Sgemm.Linear(dy.t().contiguous(), xT, null);
        var db = dy.sum(new long[] { 0 });
        // One gradient per argument of apply: none for the packed weight.
        var result = new List<Tensor> { dx.DetachFromDisposeScope(), dw.DetachFromDisposeScope(), db.DetachFromDisposeScope() };
        (_returned ??= new List<Tensor>()).AddRange(result);
        // TorchSharp's wrapper of the incoming gradient is not used after this call either (the engine keeps its own reference).
        gradOutput.Dispose();
        return new List<Tensor>(result) { null! };
    }
}
