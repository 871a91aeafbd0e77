using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// LDM's <c>AttnBlock</c>: one attention head over all pixels of a feature map, with 1x1-conv
/// projections, added back to its input. Only used where maps are small (the configured resolutions).
/// </summary>
public sealed class SpatialSelfAttention : Module<Tensor, Tensor>
{
    readonly GroupNorm norm;
    readonly ConvLayer q, k, v, proj_out;

    public SpatialSelfAttention(string name, int channels) : base(name)
    {
        norm = Decoder.Normalize(channels);
        q = new ConvLayer(channels, channels, 1);
        k = new ConvLayer(channels, channels, 1);
        v = new ConvLayer(channels, channels, 1);
        proj_out = new ConvLayer(channels, channels, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var hn = norm.forward(x);
        // [B, 1, HW, C]: a single head whose tokens are pixels; scaling 1/sqrt(C) as in the reference.
        Tensor Tokens(ConvLayer proj) => proj.forward(hn).reshape(b, 1, c, h * w).transpose(2, 3);
        var o = functional.scaled_dot_product_attention(Tokens(q), Tokens(k), Tokens(v));
        var map = o.transpose(2, 3).reshape(b, c, h, w);
        return (x + proj_out.forward(map)).MoveToOuterDisposeScope();
    }
}
