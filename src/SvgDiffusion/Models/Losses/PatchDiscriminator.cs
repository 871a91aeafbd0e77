using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;
using SvgDiffusion.Distributed;

namespace SvgDiffusion.Models.Losses;

/// <summary>
/// The PatchGAN discriminator of pix2pix / taming-transformers (3 strided layers): it scores
/// overlapping patches, so the decoder is pushed towards locally realistic texture. Keys <c>main.N</c>
/// as in the reference's <c>loss.discriminator.main.*</c>.
/// </summary>
public sealed class PatchDiscriminator : Module<Tensor, Tensor>
{
    readonly Sequential main;

    public PatchDiscriminator(int inChannels = 3, int ndf = 64, int layers = 3) : base("discriminator")
    {
        var mods = new List<(string, Module<Tensor, Tensor>)>
        {
            ("0", new ConvLayer(inChannels, ndf, 4, stride: 2, padding: 1)),
            ("1", LeakyReLU(0.2, inplace: true)),
        };
        int mult = 1;
        for (int n = 1; n <= layers; n++)
        {
            int prev = mult;
            mult = Math.Min(1 << n, 8);
            long stride = n < layers ? 2 : 1;
            mods.Add(($"{mods.Count}", new ConvLayer(ndf * prev, ndf * mult, 4, stride: stride, padding: 1, bias: false)));
            mods.Add(($"{mods.Count}", BatchNorm2d(ndf * mult)));
            mods.Add(($"{mods.Count}", LeakyReLU(0.2, inplace: true)));
        }
        mods.Add(($"{mods.Count}", new ConvLayer(ndf * mult, 1, 4, stride: 1, padding: 1)));
        main = Sequential(mods);
        RegisterComponents();
        Initialise();
    }

    /// <summary>DCGAN initialisation, as the reference: conv N(0, 0.02), norm scale N(1, 0.02), bias 0.</summary>
    void Initialise()
    {
        using var _ = torch.no_grad();
        foreach (var m in main.children())
        {
            if (m is ConvLayer conv) { conv.Weight.normal_(0, 0.02); conv.Bias?.zero_(); }
            else if (m is BatchNorm2d bn) { bn.weight!.normal_(1, 0.02); bn.bias!.zero_(); }
        }
    }

    public override Tensor forward(Tensor x)
    {
        if (!training || GlobalBatch.Current is not { IsSharded: true } batch) return main.forward(x);
        // A batch split over processes: BatchNorm sees the statistics of the whole batch, as in one process.
        using var scope = torch.NewDisposeScope();
        foreach (var m in main.children())
            x = m is BatchNorm bn ? GlobalBatchNorm.Forward(bn, x, batch.Comm) : ((Module<Tensor, Tensor>)m).forward(x);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>Hinge loss of the discriminator: mean relu(1 - D(real)) and relu(1 + D(fake)), halved.</summary>
    public static Tensor HingeLoss(Tensor logitsReal, Tensor logitsFake)
    {
        using var scope = torch.NewDisposeScope();
        var loss = 0.5 * (functional.relu(1.0 - logitsReal).mean() + functional.relu(1.0 + logitsFake).mean());
        return loss.MoveToOuterDisposeScope();
    }
}
