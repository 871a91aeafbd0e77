using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// <see cref="GenerationService.Recolor"/> on the bundled model, by its invariant: the edit's semantic
/// (frozen-encoder) channels are the source's, whatever the reference or the class; only the residual
/// channels are generated.
/// </summary>
public class RecolorTests(BundledService fx, ITestOutputHelper log) : IClassFixture<BundledService>
{
    static readonly GenerationLimits Limits = new(64, 200);

    /// <summary>The source's latent in the model's space (normalised), encoded alone.</summary>
    Tensor SourceLatent(Tensor rgb)
    {
        using var scope = torch.NewDisposeScope();
        var z = fx.Editor.Encode(fx.Editor.Prepare(new[] { rgb }));
        return fx.Service.Statistics!.Normalize(z).MoveToOuterDisposeScope();
    }

    [Theory]
    [InlineData(true, null, 0.5)]
    [InlineData(false, "bag", 1.0)]
    [InlineData(true, "coat", 0.2)]
    public void RecolorKeepsTheSourcesSemanticChannelsAndRegeneratesTheResidualOnes(bool withLike, string? cls, double strength)
    {
        var s = fx.Service;
        int semantic = fx.Editor.SemanticChannels, residual = fx.Editor.ResidualChannels;
        using var source = BundledService.Image("sneaker");
        using var like = withLike ? BundledService.Image("dress") : null;
        var plan = s.Plan(new GenerationRequest { Classes = cls is null ? null : new[] { cls }, N = 3, Steps = 4, Seed = 11 }, Limits,
            unconditionalByDefault: true, classesField: "class");
        using var r = s.Recolor(source, like, strength, plan);
        using var expected = SourceLatent(source);
        Assert.Equal(new long[] { 3, semantic + residual, expected.shape[2], expected.shape[3] }, r.Latents.shape);
        Assert.Equal(new long[] { 3, 3, fx.Editor.ImageSize, fx.Editor.ImageSize }, r.Images!.shape);

        using var kept = r.Latents.narrow(1, 0, semantic);
        double semanticError = (kept - expected.narrow(1, 0, semantic).expand_as(kept)).abs().max().item<float>();
        log.WriteLine($"like {withLike}, class {cls ?? "-"}, strength {strength}: semantic channels differ from the source's by at most {semanticError:G3}");
        Assert.True(semanticError <= 1e-5, $"the semantic channels moved by {semanticError}");

        // The residual channels are generated: not the source's, and different for each sample's noise.
        using var made = r.Latents.narrow(1, semantic, residual);
        double fromSource = (made - expected.narrow(1, semantic, residual).expand_as(made)).abs().mean().item<float>();
        double between = (made[0] - made[1]).abs().mean().item<float>();
        log.WriteLine($"  residual channels: mean |edit - source| {fromSource:G3}, between samples 0 and 1 {between:G3}");
        Assert.True(fromSource > 1e-3, $"the residual channels are the source's ({fromSource})");
        Assert.True(between > 1e-4, $"two samples' residual channels are the same ({between})");
    }

    [Fact]
    public void RecolorIsDeterministicForASeedAndSampleIDependsOnlyOnSeedAndI()
    {
        var s = fx.Service;
        using var source = BundledService.Image("t-shirt");
        using var like = BundledService.Image("bag");
        var two = s.Plan(new GenerationRequest { N = 2, Steps = 3, Seed = 4 }, Limits, unconditionalByDefault: true, classesField: "class");
        var one = s.Plan(new GenerationRequest { N = 1, Steps = 3, Seed = 4 }, Limits, unconditionalByDefault: true, classesField: "class");
        using var a = s.Recolor(source, like, 0.6, two);
        using var b = s.Recolor(source, like, 0.6, two);
        using var c = s.Recolor(source, like, 0.6, one);
        Assert.Equal(0.0, (a.Latents - b.Latents).abs().max().item<float>());
        Assert.True((a.Latents[0] - c.Latents[0]).abs().max().item<float>() <= 1e-4);
    }

    [Fact]
    public void RecolorRefusesAStrengthOutsideItsRange()
    {
        var s = fx.Service;
        using var source = BundledService.Image("sneaker");
        var plan = s.Plan(new GenerationRequest { N = 1, Steps = 2 }, Limits, unconditionalByDefault: true, classesField: "class");
        Assert.Equal("strength must be a finite number in [0.001, 1], got 0", Assert.Throws<SvgdException>(() => s.Recolor(source, null, 0, plan)).Message);
        Assert.Equal("strength must be a finite number in [0.001, 1], got 1.5", Assert.Throws<SvgdException>(() => s.Recolor(source, null, 1.5, plan)).Message);
    }
}
