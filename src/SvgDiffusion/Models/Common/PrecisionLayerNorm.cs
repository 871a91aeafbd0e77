using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// LayerNorm (keys <c>weight</c>, <c>bias</c>) that normalises half-precision inputs in float32: libtorch's
/// CPU LayerNorm is several times slower in bf16 than in fp32, and fp32 statistics are also more accurate.
/// fp32 inputs take exactly the usual path.
/// </summary>
public sealed class PrecisionLayerNorm : nn.Module<Tensor, Tensor>
{
    readonly long[] _shape;
    readonly double _eps;
#pragma warning disable IDE0044 // registered by name
    Parameter weight;
    Parameter bias;
#pragma warning restore IDE0044

    public PrecisionLayerNorm(long dim, double eps, string name = "norm") : base(name)
    {
        _shape = new[] { dim };
        _eps = eps;
        weight = new Parameter(torch.ones(dim));
        bias = new Parameter(torch.zeros(dim));
        RegisterComponents();
    }

    internal Tensor Weight => weight;
    internal Tensor Bias => bias;
    internal double Eps => _eps;

    public override Tensor forward(Tensor x)
    {
        if (x.dtype is not (ScalarType.BFloat16 or ScalarType.Float16))
            return nn.functional.layer_norm(x, _shape, weight, bias, _eps);
        using var scope = torch.NewDisposeScope();
        var y = nn.functional.layer_norm(x.to(ScalarType.Float32), _shape, weight.to(ScalarType.Float32), bias.to(ScalarType.Float32), _eps);
        return y.to(x.dtype).MoveToOuterDisposeScope();
    }
}
