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

    // Each activation is released as soon as the next one exists (a dispose scope would hold all of
    // them to the end of the block: at 256 px, batch 8, fp32 each is 268 MB), and without autograd
    // SiLU and the residual add work in place. Disposing a handle never frees what autograd saved.
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var a = Activation.Swish(norm1.forward(x));
        var h = conv1.forward(a);
        a.Dispose();
        a = Activation.Swish(norm2.forward(h));
        h.Dispose();
        var d = dropout.forward(a);
        a.Dispose();
        h = conv2.forward(d);
        d.Dispose();
        var skip = nin_shortcut?.forward(x);
        h = Activation.Add(h, skip ?? x);
        skip?.Dispose();
        return h.MoveToOuterDisposeScope();
    }
}
