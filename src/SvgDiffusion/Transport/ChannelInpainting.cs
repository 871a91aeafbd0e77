using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>
/// Inpainting in channel space: some channels of the sample are known (an image's latent), the others are
/// generated. After every solver step the known channels are replaced by the known latent moved to the
/// step's flow time along its own straight path, (1 - t) z0 + t x1 with a fixed noise z0, so the model
/// always sees a consistent point of the flow and fits the free channels to the known ones (RePaint's idea
/// with channels in place of pixels, on a deterministic ODE). At t = 1 the known channels are exactly x1.
/// SVG's recolouring keeps an image's semantic (frozen-encoder) channels and generates its residual ones.
/// </summary>
public sealed class ChannelInpainting : IDisposable
{
    readonly Tensor known, noise, mask;

    /// <param name="known">The known sample x1: tokens [B, T, C] (or any layout whose last dimension is the channels).</param>
    /// <param name="noise">The noise z0 the known channels travel from, the shape of <paramref name="known"/>.</param>
    /// <param name="knownChannels">Which of the C channels are known.</param>
    public ChannelInpainting(Tensor known, Tensor noise, bool[] knownChannels)
    {
        if (!known.shape.SequenceEqual(noise.shape))
            throw new SvgdException($"the known latent {Checkpoints.Checkpoint.Shape(known.shape)} and its noise {Checkpoints.Checkpoint.Shape(noise.shape)} differ in shape");
        if (known.shape[^1] != knownChannels.Length)
            throw new SvgdException($"{knownChannels.Length} channel flags for a latent of {known.shape[^1]} channels");
        this.known = known.to(ScalarType.Float32).alias();
        this.noise = noise.to(ScalarType.Float32).alias();
        mask = torch.tensor(knownChannels.Select(k => k ? 1f : 0f).ToArray());
    }

    /// <summary>Channels 0..<paramref name="count"/>-1 known of <paramref name="total"/>: the semantic half of an SVG latent.</summary>
    public static bool[] Leading(int count, int total) => Enumerable.Range(0, total).Select(c => c < count).ToArray();

    /// <summary>The known channels at flow time <paramref name="t"/>: (1 - t) z0 + t x1.</summary>
    public Tensor KnownAt(double t)
    {
        using var scope = torch.NewDisposeScope();
        return ((1 - t) * noise + t * known).MoveToOuterDisposeScope();
    }

    /// <summary><paramref name="x"/> at time <paramref name="t"/> with its known channels replaced (rows of a batch slice: <paramref name="first"/> onwards).</summary>
    public Tensor Apply(Tensor x, double t, long first = 0)
    {
        using var scope = torch.NewDisposeScope();
        // Only the slice's rows of the known path: a pass of m rows costs m rows, not the whole batch.
        long rows = x.shape[0];
        var k = (1 - t) * noise.narrow(0, first, rows) + t * known.narrow(0, first, rows);
        var m = mask.to(x.dtype);
        return (x * (1 - m) + k.to(x.dtype) * m).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        known.Dispose();
        noise.Dispose();
        mask.Dispose();
    }
}
