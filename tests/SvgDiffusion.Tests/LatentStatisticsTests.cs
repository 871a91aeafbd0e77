using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class LatentStatisticsTests
{
    [Fact]
    public void ReleasedStatisticsFileLoads()
    {
        using var stats = LatentStatistics.Load(Reference.File_("svg_latent_stats_dinov3_vitsp.pt"));
        Assert.Equal(392, stats.Channels);
        Assert.Equal(new long[] { 1, 1, 392 }, stats.Mean.shape);
        Assert.True((stats.Std > 0).all().item<bool>());
    }

    [Fact]
    public void AccumulatedStatisticsEqualDirectOnes()
    {
        var a = torch.randn(3, 5, 4, 4) * 2 + 1;
        var b = torch.randn(2, 5, 4, 4) * 3 - 1;
        var acc = new LatentStatistics.Accumulator();
        acc.Add(a);
        acc.Add(b);
        using var stats = acc.Result();
        var tokens = torch.cat(new[] { a, b }).permute(0, 2, 3, 1).reshape(-1, 5).to(ScalarType.Float64);
        Reference.Close(tokens.mean(new long[] { 0 }), stats.Mean.flatten(), 1e-5, "mean");
        Reference.Close(tokens.std(new long[] { 0 }, unbiased: true), stats.Std.flatten(), 1e-5, "std");
        // Normalising then de-normalising is the identity, and normalised channels have unit scale.
        using var n = stats.Normalize(a);
        Reference.Close(a, stats.Denormalize(n), 1e-5, "round trip");
        string p = Path.Combine(Reference.TempDir(), "s.safetensors");
        stats.Save(p);
        using var back = LatentStatistics.Load(p);
        Assert.True(Reference.Same(stats.Std, back.Std));
    }
}
