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

    [Theory]
    [InlineData("fashion-mnist")]
    [InlineData("emoji")]
    public void SeededFiveStepSampleMatchesTheStoredLatent(string name)
    {
        string dir = Path.Combine(Reference.RepoRoot, "models", name);
        string expectedPath = Path.Combine(dir, "expected-sample.safetensors");
        Assert.True(File.Exists(expectedPath), $"missing {expectedPath}");
        var expected = SafeTensors.Load(expectedPath);
        using var dit = DiTCheckpoint.Load(Path.Combine(dir, "dit.safetensors"));
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

    /// <summary>
    /// The emoji model's promise, on the issue's own example: Noto's BLACK CAT recoloured like Twemoji's CAT (another
    /// artist, another pose) keeps its shape (foreground IoU >= 0.8) and takes the reference's colour (its mean
    /// foreground colour nearer the reference's than the source's is).
    /// </summary>
    [Fact]
    public void TheEmojiModelTurnsTheBlackCatOrangeAndKeepsTheCat()
    {
        using var pipe = SvgDiffusion.Pipelines.SvgPipeline.FromPretrained("emoji", "fp32");
        string cats = Path.Combine(Reference.RepoRoot, "tests", "data", "emoji");
        string source = Path.Combine(cats, "google", "1f408-200d-2b1b.png"), like = Path.Combine(cats, "twitter", "1f408.png");
        using var edit = pipe.Recolor(source, like);
        var bg = (1.0, 1.0, 1.0);
        var editor = pipe.Service.Editor!;
        using var inputs = editor.Prepare(new[] { SvgDiffusion.Data.ImageFiles.ToRgb(SvgDiffusion.Data.ImageFiles.LoadRgba(source), (255, 255, 255)),
                                                  SvgDiffusion.Data.ImageFiles.ToRgb(SvgDiffusion.Data.ImageFiles.LoadRgba(like), (255, 255, 255)) });
        var src01 = (inputs[0] + 1) / 2; var ref01 = (inputs[1] + 1) / 2; var out01 = (edit.Images[0] + 1) / 2;
        double iou = SvgDiffusion.Evaluation.ShapeAndColour.ForegroundIoU(src01, out01, bg);
        var mEdit = SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(out01, bg);
        double toRef = SvgDiffusion.Evaluation.ShapeAndColour.ColourDistance(mEdit, SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(ref01, bg));
        double toSrc = SvgDiffusion.Evaluation.ShapeAndColour.ColourDistance(mEdit, SvgDiffusion.Evaluation.ShapeAndColour.MeanColour(src01, bg));
        Assert.True(iou >= 0.8, $"foreground IoU {iou:F3}");
        Assert.True(toRef < toSrc, $"mean colour {string.Join(",", mEdit.Select(v => v.ToString("F2")))}: {toRef:F3} from the reference's, {toSrc:F3} from the source's");
    }
}
