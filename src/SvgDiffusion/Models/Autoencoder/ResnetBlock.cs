using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>The LDM decoder's residual block (no timestep input): two GroupNorm-swish-conv stages.</summary>
public sealed class ResnetBlock : Module<Tensor, Tensor>
{
    readonly GroupNorm norm1, norm2;
    readonly ConvLayer conv1, conv2;
    readonly SampleDropout dropout;
    // A 1x1 projection only where the width changes, named as in LDM's checkpoints.
    readonly ConvLayer? nin_shortcut;

    public ResnetBlock(string name, int inChannels, int outChannels, double dropout) : base(name)
    {
        norm1 = Decoder.Normalize(inChannels);
        conv1 = new ConvLayer(inChannels, outChannels, 3, padding: 1);
        norm2 = Decoder.Normalize(outChannels);
        this.dropout = new SampleDropout(dropout);
        conv2 = new ConvLayer(outChannels, outChannels, 3, padding: 1);
        if (inChannels != outChannels) nin_shortcut = new ConvLayer(inChannels, outChannels, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = conv1.forward(functional.silu(norm1.forward(x)));
        h = conv2.forward(dropout.forward(functional.silu(norm2.forward(h))));
        var skip = nin_shortcut?.forward(x) ?? x;
        return (skip + h).MoveToOuterDisposeScope();
    }
}
