using SvgDiffusion.Models.Common;
using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>timm's <c>Mlp</c> as DiT configures it: <c>fc1</c>, tanh-approximated GELU, <c>fc2</c>.</summary>
public sealed class FeedForward : Module<Tensor, Tensor>
{
    readonly PackedLinear fc1, fc2;

    public FeedForward(int dim, int hidden) : base("mlp")
    {
        fc1 = new PackedLinear(dim, hidden);
        fc2 = new PackedLinear(hidden, dim);
        RegisterComponents();
    }

    internal IEnumerable<PackedLinear> Linears => new[] { fc1, fc2 };
    internal PackedLinear Fc1 => fc1;
    internal PackedLinear Fc2 => fc2;

    public override Tensor forward(Tensor x)
    {
        // bf16 inference: the activation runs in fc1's GEMM epilogue, on the fp32 sum.
        using (var fused = fc1.ForwardGeluTanhFused(x))
            if (fused is not null) return fc2.forward(fused);
        using var h = fc1.forward(x);
        // DiT trained with the tanh approximation; the exact erf form would shift outputs by ~1e-4.
        if (FusedOps.Applies(h) && h.is_contiguous())
        {
            FusedOps.GeluTanh_(h);
            return fc2.forward(h);
        }
        using var a = functional.gelu(h, TorchSharp.Modules.GELU.Approximate.tanh);
        return fc2.forward(a);
    }
}
