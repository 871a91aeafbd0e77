using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Vae;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>The VAE baseline and the SVG ablation arms of the study.</summary>
public class VaeTests
{
    static KlAutoencoder Tiny(long seed, int channels = 4)
    {
        torch.manual_seed(seed);
        var c = VaePresets.Get(VaePresets.SdLike32);
        return new KlAutoencoder(c with { Ddconfig = c.Ddconfig with { Ch = 32, ZChannels = channels }, EmbedDim = channels });
    }

    [Fact]
    public void KlTermMatchesItsClosedForm()
    {
        using var scope = torch.NewDisposeScope();
        using var zero = new DiagonalGaussian(torch.zeros(2, 8, 3, 3));
        Assert.Equal(0.0, zero.Kl().abs().max().item<float>(), 6);

        var mean = torch.randn(2, 4, 3, 3, dtype: ScalarType.Float64);
        var logvar = torch.randn(2, 4, 3, 3, dtype: ScalarType.Float64);
        using var q = new DiagonalGaussian(torch.cat(new[] { mean, logvar }, 1));
        // KL(N(mu, s^2) || N(0, 1)) = log(1/s) + (s^2 + mu^2)/2 - 1/2, summed per sample.
        var s2 = logvar.exp();
        var expected = ((-0.5 * logvar) + (s2 + mean.square()) / 2 - 0.5).sum(new long[] { 1, 2, 3 });
        Assert.True(Reference.MaxAbs(expected, q.Kl()) < 1e-10);
        Assert.True(q.Kl().min().item<double>() >= 0);
    }

    [Fact]
    public void ReparameterisedSampleIsMeanPlusStdTimesSeededNoise()
    {
        using var scope = torch.NewDisposeScope();
        var mean = torch.randn(3, 2, 4, 4).requires_grad_();
        var logvar = (torch.randn(3, 2, 4, 4) * 0.5).requires_grad_();
        using var q = new DiagonalGaussian(torch.cat(new[] { mean, logvar }, 1));
        using var g1 = new Generator(11);
        using var g2 = new Generator(11);
        var z = q.Sample(g1);
        var eps = torch.randn(mean.shape, generator: g2);
        var expected = mean.detach() + (logvar.detach() * 0.5).exp() * eps;
        Assert.True(Reference.MaxAbs(expected, z.detach()) < 1e-6);
        // Differentiable in both moments: dz/dmu = 1, dz/dlogvar = 0.5 std eps.
        z.sum().backward();
        Assert.True(Reference.MaxAbs(torch.ones_like(mean), mean.grad!) < 1e-6);
        Assert.True(Reference.MaxAbs(0.5 * (logvar.detach() * 0.5).exp() * eps, logvar.grad!) < 1e-6);
        // Huge log-variances are clamped (LDM: [-30, 20]) so a diverging encoder cannot give infinite std.
        using var wild = new DiagonalGaussian(torch.cat(new[] { torch.zeros(1, 1, 1, 1), torch.full(1, 1, 1, 1, 1e4) }, 1));
        Assert.True(float.IsFinite(wild.Std.item<float>()) && wild.LogVar.item<float>() == 20f);
    }

    [Theory]
    [InlineData(VaePresets.SdLike32, 4)]
    [InlineData(VaePresets.SvgSized32, 136)]
    public void PresetsGiveTheSvgLatentGrid(string preset, int channels)
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(0);
        using var vae = new KlAutoencoder(VaePresets.Get(preset));
        vae.eval();
        using var _ = torch.no_grad();
        var x = torch.rand(2, 3, 32, 32) * 2 - 1;
        var z = vae.EncodeImages(x);
        Assert.Equal(new long[] { 2, channels, 4, 4 }, z.shape);
        Assert.Equal(new long[] { 2, 3, 32, 32 }, vae.Decode(z).shape);
        // In eval mode the latent is the posterior mean: deterministic.
        Assert.True(Reference.Same(z, vae.EncodeImages(x)));
    }

    [Fact]
    public void FileRoundTripRebuildsTheSameVae()
    {
        using var scope = torch.NewDisposeScope();
        using var vae = Tiny(3);
        vae.eval();
        string path = Path.Combine(Reference.TempDir(), "vae.safetensors");
        AutoencoderFile.Save(vae, path);
        Assert.True(AutoencoderFile.IsVae(path));
        using var back = AutoencoderFile.Load(path);
        Assert.Equal("vae", back.Kind);
        using var _ = torch.no_grad();
        var x = torch.rand(2, 3, 32, 32) * 2 - 1;
        Assert.True(Reference.Same(vae.Decode(vae.EncodeImages(x)), back.Decode(back.EncodeImages(x))));
        var err = Assert.Throws<SvgdException>(() => AutoencoderFile.Load(path, SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32)));
        Assert.Contains("VAE", err.Message);
    }

    [Fact]
    public void VaeTrainsWithKlAndResumesExactly()
    {
        var data = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        var cfg = new AutoencoderTrainingConfig { BatchSize = 4, LearningRate = 1e-3, DiscStart = 2, KlWeight = 1e-3, Seed = 2 };
        string dir = Reference.TempDir();
        using var straight = new AutoencoderTrainer(Tiny(5), data, cfg);
        var results = Enumerable.Range(0, 4).Select(_ => straight.TrainStep()).ToList();
        Assert.All(results, r => Assert.True(r.Kl > 0 && double.IsFinite(r.Kl), $"KL term {r.Kl}"));
        Assert.True(results[^1].DiscriminatorLoss > 0, "the PatchGAN phase runs for a VAE too");
        // The total is reconstruction + kl_weight * KL (+ the GAN term once on).
        Assert.Equal(results[0].L1 + 1e-3 * results[0].Kl, results[0].Loss, 4);

        using (var first = new AutoencoderTrainer(Tiny(5), data, cfg))
        {
            for (int i = 0; i < 2; i++) first.TrainStep();
            first.Save(Path.Combine(dir, "run.safetensors"));
        }
        using var resumed = AutoencoderTrainer.Resume(Path.Combine(dir, "run.safetensors"), data);
        Assert.IsType<KlAutoencoder>(resumed.Model);
        for (int i = 0; i < 2; i++) resumed.TrainStep();
        var a = straight.Model.Module.state_dict();
        foreach (var (k, t) in resumed.Model.Module.state_dict()) Assert.True(Reference.Same(a[k], t), $"{k} differs after resume");
    }

    [Fact]
    public void AblationPresetsShapeTheLatent()
    {
        var frozen = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32FrozenOnly);
        Assert.False(frozen.HasResidual);
        Assert.Equal(128, frozen.LatentChannels);
        var noAlign = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.ResNet18Small32NoAlignment);
        Assert.Equal(AlignmentMode.None, noAlign.Alignment.Mode);
        Assert.Equal(136, noAlign.LatentChannels);

        using var scope = torch.NewDisposeScope();
        using var model = new SvgAutoencoder(frozen);
        model.eval();
        using var _ = torch.no_grad();
        var x = torch.rand(2, 3, 32, 32) * 2 - 1;
        var z = model.EncodeImages(x);
        Assert.Equal(new long[] { 2, 128, 4, 4 }, z.shape);
        // Without a residual branch the latent is exactly the frozen encoder's features.
        using var e = model.EncodeDetailed(SvgAutoencoder.ToEncoderInput(x));
        Assert.True(Reference.Same(e.Semantic.reshape(2, 128, 4, 4), z));
        Assert.DoesNotContain(model.TrainableParameters(), p => p.shape.Length == 3);   // no mask token
    }
}
