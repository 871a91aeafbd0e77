using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// <c>nn.Linear</c> — same parameters, initialisation and state-dict keys — whose fp32 inference runs
/// on <see cref="Sgemm"/>'s packed AVX-512 GEMM instead of libtorch's (MKL's, slow on AMD). Anything
/// that needs autograd, any other dtype and matrix-vector sized inputs take libtorch's linear.
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
        // Drawn by nn.Linear itself so seeded models start from the same weights as before.
        using var init = torch.nn.Linear(inFeatures, outFeatures, hasBias);
        _weight = new Parameter(init.weight!.detach().clone());
        if (hasBias) _bias = new Parameter(init.bias!.detach().clone());
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
/// tensor. The copy costs as much memory as the fp32 weight.
/// </summary>
public sealed class PackedWeightSlot : IDisposable
{
    readonly object _gate = new();
    PackedWeight? _packed;
    Tensor? _source;
    IntPtr _data;
    long _version;

    /// <summary><c>linear(x, weight, bias)</c>, on the packed GEMM where it applies.</summary>
    public Tensor Linear(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!Applies(x, weight, bias)) return functional.linear(x, weight, bias);
        return Sgemm.Linear(x, Get(weight), bias);
    }

    static bool Applies(Tensor x, Tensor weight, Tensor? bias)
    {
        if (x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.Float32 || x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU) return false;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || bias.device_type != DeviceType.CPU)) return false;
        if (x.dim() == 0 || weight.dim() != 2 || x.shape[^1] != weight.shape[1]) return false; // libtorch words the error
        if (torch.is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true)) return false;
        if (x.numel() / Math.Max(1, weight.shape[1]) < Sgemm.MinRows) return false;
        // Inference tensors have no version counter to tell a changed weight by.
        if (LibTorchNative.IsInference(weight)) return false;
        return Sgemm.Enabled;
    }

    PackedWeight Get(Tensor weight)
    {
        IntPtr data = LibTorchNative.DataPointer(weight);
        long version = LibTorchNative.Version(weight);
        lock (_gate)
        {
            if (_packed != null && ReferenceEquals(_source, weight) && _data == data && _version == version) return _packed;
            _packed?.Dispose();
            _packed = null;
            _packed = Sgemm.Pack(weight);
            (_source, _data, _version) = (weight, data, version);
            return _packed;
        }
    }

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
