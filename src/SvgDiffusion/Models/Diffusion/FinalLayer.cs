using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Output head: adaLN (shift and scale from the condition, no gate), LayerNorm without affine, and the
/// per-token <c>linear</c> to the output channels. Zero-initialised so a new model predicts zero velocity.
/// </summary>
public sealed class FinalLayer : nn.Module
{
    readonly LayerNorm norm_final;
    readonly PackedLinear linear;
    readonly Sequential adaLN_modulation;

    public FinalLayer(int hidden, int outChannels) : base("final_layer")
    {
        norm_final = LayerNorm(hidden, DiTBlock.NormEps, elementwise_affine: false);
        linear = new PackedLinear(hidden, outChannels);
        adaLN_modulation = Sequential(("0", SiLU()), ("1", new PackedLinear(hidden, 2 * hidden)));
        RegisterComponents();
    }

    internal PackedLinear Output => linear;
    internal PackedLinear Modulation => (PackedLinear)adaLN_modulation.children().Last();

    public Tensor Forward(Tensor x, Tensor c)
    {
        using var scope = torch.NewDisposeScope();
        var m = adaLN_modulation.forward(c).chunk(2, dim: 1);
        return linear.forward(DiTBlock.NormModulate(norm_final, x, m[0], m[1])).MoveToOuterDisposeScope();
    }
}
