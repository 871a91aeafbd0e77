using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// A 2-D convolution layer with <c>torch.nn.Conv2d</c>'s keys (<c>weight</c> [out, in/groups, kh, kw],
/// <c>bias</c>) and initialisation, computed through <c>Runtime.Convolution.Conv2d</c> so that the
/// machine's verified kernel path applies to every model. TorchSharp's own Conv2d runs its forward in
/// native code, out of the reach of that path.
/// </summary>
public sealed class ConvLayer : nn.Module<Tensor, Tensor>
{
    public long InChannels { get; }
    public long OutChannels { get; }
    public (long, long) Kernel { get; }
    public (long, long) Stride { get; }
    public (long, long) Padding { get; }
    public long Groups { get; }

#pragma warning disable IDE0044 // registered by name
    Parameter weight;
    Parameter? bias;
#pragma warning restore IDE0044

    public ConvLayer(long inChannels, long outChannels, long kernel, long stride = 1, long padding = 0, bool bias = true, long groups = 1)
        : this(inChannels, outChannels, (kernel, kernel), (stride, stride), (padding, padding), bias, groups) { }

    public ConvLayer(long inChannels, long outChannels, (long, long) kernel, (long, long) stride, (long, long) padding, bool bias = true, long groups = 1)
        : base("Conv2d")
    {
        if (inChannels <= 0 || outChannels <= 0 || inChannels % groups != 0 || outChannels % groups != 0)
            throw new ArgumentException($"conv {inChannels}->{outChannels} channels in {groups} groups");
        InChannels = inChannels;
        OutChannels = outChannels;
        Kernel = kernel;
        Stride = stride;
        Padding = padding;
        Groups = groups;
        // The parameters live as long as the module: a dispose scope open around the constructor
        // (as in the trainers) must not take them.
        weight = new Parameter(torch.empty(outChannels, inChannels / groups, kernel.Item1, kernel.Item2));
        weight.DetachFromDisposeScope();
        // PyTorch's reset_parameters, in its order, so seeded models start where they did with nn.Conv2d.
        nn.init.kaiming_uniform_(weight, Math.Sqrt(5));
        if (bias)
        {
            double bound = 1 / Math.Sqrt(inChannels / groups * kernel.Item1 * kernel.Item2);
            this.bias = new Parameter(torch.empty(outChannels));
            this.bias.DetachFromDisposeScope();
            nn.init.uniform_(this.bias, -bound, bound);
        }
        RegisterComponents();
    }

    public Parameter Weight => weight;
    public Parameter? Bias => bias;

    public override Tensor forward(Tensor input) =>
        Runtime.Convolution.Conv2d(input, weight, bias, Stride, Padding, (1, 1), Groups);
}
