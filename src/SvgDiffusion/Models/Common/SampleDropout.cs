using SvgDiffusion.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Common;

/// <summary>
/// Inverted dropout (<c>nn.Dropout</c>) whose mask, during a training step, is drawn per sample from the
/// step's <see cref="GlobalBatch.Dropout"/> streams: a sample is dropped the same way whichever process
/// holds it and whatever else shares its batch. Without a step in force (or with p = 0) it is plain
/// dropout on torch's global generator. No weights, so it loads like the <c>nn.Dropout</c> it replaces.
/// </summary>
public sealed class SampleDropout : nn.Module<Tensor, Tensor>
{
    public double P { get; }

    public SampleDropout(double p) : base("dropout")
    {
        if (p is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(p), $"dropout must be in [0, 1), got {p}");
        P = p;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        if (!training || P == 0) return x.alias();
        if (GlobalBatch.Current?.Dropout is not SampleRandom r) return nn.functional.dropout(x, P, training: true);
        if (x.dim() == 0 || x.shape[0] != r.Count)
            throw new InvalidOperationException($"dropout over a batch of {(x.dim() == 0 ? 0 : x.shape[0])} while the step holds {r.Count} samples");
        using var scope = torch.NewDisposeScope();
        var scale = r.DropoutScale(P, x.shape[1..], x.dtype, x.device);
        return (x * scale).MoveToOuterDisposeScope();
    }
}
