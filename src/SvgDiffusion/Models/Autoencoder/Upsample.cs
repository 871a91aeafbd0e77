using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>Nearest-neighbour x2 followed by a 3x3 conv, which smooths the blockiness of the copy.</summary>
public sealed class Upsample : Module<Tensor, Tensor>
{
    readonly ConvLayer conv;

    public Upsample(int channels) : base("upsample")
    {
        conv = new ConvLayer(channels, channels, 3, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var up = functional.interpolate(x, scale_factor: new[] { 2.0, 2.0 }, mode: InterpolationMode.Nearest);
        return conv.forward(up);
    }
}
