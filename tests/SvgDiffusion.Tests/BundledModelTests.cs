using SvgDiffusion.Checkpoints;
using SvgDiffusion.Cli;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using SvgDiffusion.Transport;
using Spectre.Console.Testing;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>The committed model under models/fashion-mnist stays consistent with the code that reads it.</summary>
public class BundledModelTests
{
    static string ModelDir => Path.Combine(Reference.RepoRoot, "models", BundledModel.Name);

    [Fact]
    public void SeededFiveStepSampleMatchesTheStoredLatent()
    {
        string expectedPath = Path.Combine(ModelDir, "expected-sample.safetensors");
        Assert.True(File.Exists(expectedPath), $"missing {expectedPath}");
        var expected = SafeTensors.Load(expectedPath);
        using var dit = DiTCheckpoint.Load(Path.Combine(ModelDir, "dit.safetensors"));
        dit.eval();
        var labels = expected["labels"].data<long>().Select(l => (int)l).ToList();
        var generator = new SvgGenerator(dit, Sampler.Create("euler", 5), GuidanceSchedule.Parse(1.5, "constant"));
        var noise = torch.stack(Enumerable.Range(0, labels.Count).Select(i => generator.Noise(0, i)).ToArray());
        var latent = generator.SampleLatents(noise, labels);
        Reference.Close(expected["latent"], latent, 1e-4, "bundled 5-step sample");
    }

    [Fact]
    public void BundledModelLoadsFromTheBuildOutputAndDecodes()
    {
        BundledModel.EnsurePresent();
        var names = BundledModel.ClassNames(BundledModel.DiTPath);
        Assert.NotNull(names);
        Assert.Equal(10, names!.Count);
        using var ae = SvgAutoencoderCheckpoint.Load(BundledModel.AutoencoderPath);
        using var stats = LatentStatistics.Load(BundledModel.StatisticsPath);
        Assert.Equal(ae.Config.LatentChannels, stats.Channels);
        string out_ = Path.Combine(Reference.TempDir(), "s.png");
        var console = new TestConsole();
        var err = new StringWriter();
        int code = SvgdCli.Run(new[] { "sample", "--n", "2", "--steps", "3", "--out", out_ }, console, err);
        Assert.True(code == 0, err.ToString() + console.Output);
        Assert.True(File.Exists(out_));
    }

    [Fact]
    public void DecodeOnlyLoadDecodesAsTheFullModelAndRefusesToEncode()
    {
        BundledModel.EnsurePresent();
        using var scope = torch.NewDisposeScope();
        using var full = SvgAutoencoderCheckpoint.Load(BundledModel.AutoencoderPath);
        using var decodeOnly = SvgAutoencoderCheckpoint.Load(BundledModel.AutoencoderPath, decodeOnly: true);
        Assert.Empty(decodeOnly.SemanticEncoder is nn.Module m ? m.parameters() : throw new InvalidOperationException());
        var z = torch.randn(2, full.Config.LatentChannels, full.LatentSize, full.LatentSize);
        using var _ = torch.inference_mode();
        Assert.Equal(0.0, (full.Decode(z) - decodeOnly.Decode(z)).abs().max().item<float>());
        var images = torch.zeros(1, 3, full.ImageSize, full.ImageSize);
        var e = Assert.Throws<SvgdException>(() => decodeOnly.EncodeImages(images));
        Assert.Contains("decode only", e.Message);
        Assert.Contains("decode only", Assert.Throws<SvgdException>(() => SvgAutoencoderCheckpoint.Save(decodeOnly, Path.Combine(Reference.TempDir(), "ae.safetensors"))).Message);
    }
}
