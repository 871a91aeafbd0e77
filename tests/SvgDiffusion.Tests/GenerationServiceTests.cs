using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The bundled model loaded once, as the CLI and the server load it, for the tests that generate with it.</summary>
public sealed class BundledService : IDisposable
{
    public GenerationService Service { get; }

    public BundledService()
    {
        BundledModel.EnsurePresent();
        var dit = DiTCheckpoint.Load(BundledModel.DiTPath);
        dit.eval();
        var ae = SvgAutoencoderCheckpoint.Load(BundledModel.AutoencoderPath);
        ae.eval();
        var stats = LatentStatistics.Load(BundledModel.StatisticsPath);
        Service = new GenerationService(dit, ae, stats, BundledModel.ClassNames(BundledModel.DiTPath), ScalarType.Float32);
    }

    public SemanticEditor Editor => Service.Editor!;

    /// <summary>A committed Fashion-MNIST test image, RGB uint8 [3, 28, 28].</summary>
    public static Tensor Image(string cls, int which = 0) => ImageFiles.LoadRgb(ImagePath(cls, which));

    public static string ImagePath(string cls, int which = 0) =>
        Directory.GetFiles(Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist", cls), "*.png").OrderBy(f => f, StringComparer.Ordinal).ElementAt(which);

    public void Dispose()
    {
        Service.Model.Dispose();
        Service.Autoencoder?.Dispose();
        Service.Statistics?.Dispose();
    }
}

/// <summary>
/// Item 1 and 2 of the studio issue in the library: one request type validated in one place, class names
/// wherever labels go, and the semantic edits (mix, interpolate, vary) checked by their invariants.
/// </summary>
public class GenerationServiceTests(BundledService fx, ITestOutputHelper log) : IClassFixture<BundledService>
{
    static readonly string[] Fashion = { "ankle-boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "t-shirt", "trouser" };
    static readonly GenerationLimits Small = new(64, 200, " (server limit)");

    static string Refusal(Action a) => Assert.Throws<SvgdException>(a).Message;

    [Fact]
    public void RequestIsRefusedInOneSentenceThatNamesTheFieldInTheCallersSpelling()
    {
        var ok = new GenerationRequest();
        ok.Validate(Small);
        Assert.Equal("steps must be a positive whole number, got -3", Refusal(() => (ok with { Steps = -3 }).Validate(Small)));
        Assert.Equal("--steps must be a positive whole number, got 0", Refusal(() => (ok with { Steps = 0 }).Validate(GenerationLimits.Cli, "--")));
        Assert.Equal("steps 500 is more than the limit of 200", Refusal(() => (ok with { Steps = 500 }).Validate(Small)));
        Assert.Equal("n 100000 is more than 64 samples (server limit)", Refusal(() => (ok with { N = 100000 }).Validate(Small)));
        Assert.Equal("n must be a positive whole number, got 0", Refusal(() => (ok with { N = 0 }).Validate(Small)));
        Assert.Equal("cfg must be a finite number in [0, 100], got NaN", Refusal(() => (ok with { Cfg = double.NaN }).Validate(Small)));
        Assert.Equal("shift must be a finite number in [0.001, 1000], got 0", Refusal(() => (ok with { Shift = 0 }).Validate(Small)));
        // Subnormal and huge values would pass "> 0" and "finite", then come out of the sampler as NaN.
        Assert.Equal("shift must be a finite number in [0.001, 1000], got 1E-320", Refusal(() => (ok with { Shift = 1e-320 }).Validate(Small)));
        Assert.Equal("--shift must be a finite number in [0.001, 1000], got 1E+300", Refusal(() => (ok with { Shift = 1e300 }).Validate(GenerationLimits.Cli, "--")));
        Assert.Equal("cfg must be a finite number in [0, 100], got 1E+30", Refusal(() => (ok with { Cfg = 1e30 }).Validate(Small)));
        Assert.Equal("strength must be a finite number in [0.001, 1], got 1E-320", Refusal(() => GenerationRequest.ValidateStrength(1e-320)));
        Assert.StartsWith("guidance: unknown guidance mode 'cfg_star-1-1e300'", Refusal(() => (ok with { Guidance = "cfg_star-1-1e300" }).Validate(Small)));
        Assert.Equal("sampler must be euler or heun, not 'rk4'", Refusal(() => (ok with { Sampler = "rk4" }).Validate(Small)));
        Assert.StartsWith("guidance: unknown guidance mode 'sometimes'", Refusal(() => (ok with { Guidance = "sometimes" }).Validate(Small)));
        Assert.Equal("--precision must be one of auto, fp32, bf16, not 'fp16'", Refusal(() => (ok with { Precision = "fp16" }).Validate(Small, "--")));
        Assert.Equal("give either classes or labels, not both", Refusal(() => (ok with { Classes = new[] { "1" }, Labels = new[] { "2" } }).Validate(Small)));
    }

    [Fact]
    public void ClassesResolveFromIndicesOrStoredNames()
    {
        var classes = new ClassLabels(10, Fashion);
        Assert.Equal(7, classes.Resolve("sneaker", "classes"));
        Assert.Equal(7, classes.Resolve(" Sneaker ", "classes"));
        Assert.Equal(7, classes.Resolve("7", "classes"));
        Assert.Equal(10, classes.Resolve("null", "labels", allowNull: true));
        Assert.Equal(10, classes.Resolve("10", "labels", allowNull: true));
        Assert.Contains("'10' is not a class index in 0..9", Refusal(() => classes.Resolve("10", "classes")));
        string unknown = Refusal(() => classes.Resolve("sneker", "--classes"));
        Assert.StartsWith("--classes: unknown class 'sneker' (classes, index = position: 0 ankle-boot, 1 bag,", unknown);
        Assert.Equal(new[] { 7, 1, 3 }, classes.ResolveAll(new[] { "sneaker,bag", "3" }, "classes"));
        // Names that do not match the classes one to one are not trusted.
        Assert.Null(new ClassLabels(10, Fashion.Take(9).ToList()).Names);
        Assert.Contains("stores no class names", Refusal(() => new ClassLabels(10).Resolve("bag", "classes")));
    }

    [Fact]
    public void PlanGivesRowsPerClassRandomLabelsFromTheSeedOrTheNullLabel()
    {
        var classes = new ClassLabels(10, Fashion);
        var plan = new GenerationRequest { Classes = new[] { "sneaker", "bag" }, N = 3 }.Resolve(classes, Small);
        Assert.Equal(new[] { 7, 7, 7, 1, 1, 1 }, plan.Labels);
        Assert.Equal(2, plan.Rows);
        var a = new GenerationRequest { N = 6, Seed = 4 }.Resolve(classes, Small);
        var b = new GenerationRequest { N = 6, Seed = 4 }.Resolve(classes, Small);
        Assert.Equal(a.Labels, b.Labels);
        Assert.Equal(0, a.Rows);
        Assert.All(new GenerationRequest { N = 3 }.Resolve(classes, Small, unconditionalByDefault: true).Labels, l => Assert.Equal(10, l));
        Assert.Equal(new[] { 7, 10, 1 }, new GenerationRequest { Labels = new[] { "sneaker", "null", "1" } }.Resolve(classes, Small).Labels);
        Assert.Contains("n 40 per class for 2 classes is more than 64 samples",
            Refusal(() => new GenerationRequest { Classes = new[] { "sneaker", "bag" }, N = 40 }.Resolve(classes, Small)));
    }

    [Fact]
    public void CliClassNamesSampleExactlyWhatTheirIndicesSample()
    {
        string dir = Reference.TempDir();
        string[] Args(string classes, string file) => new[] { "sample", "--classes", classes, "--n", "2", "--steps", "2", "--no-decode", "--latent-out", Path.Combine(dir, file) };
        var r1 = Reference.RunCli(Args("sneaker,bag", "names.safetensors"));
        Assert.True(r1.Code == 0, r1.Err + r1.Out);
        var r2 = Reference.RunCli(Args("7,1", "indices.safetensors"));
        Assert.True(r2.Code == 0, r2.Err + r2.Out);
        var a = SafeTensors.Load(Path.Combine(dir, "names.safetensors"));
        var b = SafeTensors.Load(Path.Combine(dir, "indices.safetensors"));
        Assert.True(Reference.Same(a["latent"], b["latent"]));
        Assert.Equal(new long[] { 7, 7, 1, 1 }, a["labels"].data<long>().ToArray());
        var bad = Reference.RunCli("sample", "--classes", "sneker", "--out", Path.Combine(dir, "x.png"));
        Assert.Equal(1, bad.Code);
        Assert.Contains("error: --classes: unknown class 'sneker' (classes, index = position: 0 ankle-boot, 1 bag", bad.Err);
    }

    [Fact]
    public void ServiceResultsDoNotDependOnBatchSize()
    {
        var s = fx.Service;
        var plan = s.Plan(new GenerationRequest { Classes = new[] { "coat", "dress" }, N = 3, Steps = 2 }, Small);
        s.BatchSize = 16;
        using var a = s.Generate(plan, decode: false);
        s.BatchSize = 2;
        using var b = s.Generate(plan, decode: false);
        s.BatchSize = 0;
        using var c = s.Generate(plan, decode: false);
        Reference.Close(a.Latents, b.Latents, 1e-5, "batch 16 vs 2");
        Reference.Close(a.Latents, c.Latents, 1e-5, "batch 16 vs automatic");
        Assert.Equal(new[] { "coat", "dress" }, a.RowNames);
    }

    [Fact]
    public void AutomaticBatchFillsAPassWithTokensAndNeverDropsBelowSixteen()
    {
        var s = fx.Service;
        Assert.Equal(0, s.BatchSize);
        Assert.Equal(GenerationService.TokensPerPass / 16, s.PassSize(4, 4));
        Assert.Equal(16, s.PassSize(16, 16));
        Assert.Equal(16, s.PassSize(32, 32));
        s.BatchSize = 5;
        Assert.Equal(5, s.PassSize(4, 4));
        s.BatchSize = 0;
        Assert.Contains("positive", Refusal(() => s.BatchSize = -1));

        var err = new StringWriter();
        int code = SvgDiffusion.Cli.SvgdCli.Run(new[] { "sample", "--batch-size", "-1", "--out", Path.Combine(Reference.TempDir(), "x.png") }, new Spectre.Console.Testing.TestConsole(), err);
        Assert.NotEqual(0, code);
        Assert.Equal("error: --batch-size must be a positive whole number (or 0: automatic), got -1", err.ToString().Trim());
    }

    [Fact]
    public void VaryAtFullStrengthIsPlainSamplingAndLowStrengthStaysNearTheImage()
    {
        var s = fx.Service;
        using var image = BundledService.Image("sneaker");
        var plan = s.Plan(new GenerationRequest { Classes = new[] { "sneaker" }, N = 4, Steps = 5, Seed = 3 }, Small);
        using var plain = s.Generate(plan);
        using var full = s.Vary(image, 1.0, plan);
        Reference.Close(plain.Latents, full.Latents, 1e-5, "vary at strength 1 vs sampling");

        // The image's own latent, in the DiT's space: low strength ends near it, high strength far from it.
        // Strength is the fraction of the (shifted) schedule run: 0.05 starts at t = 0.74, 0.8 at t = 0.036.
        Assert.Equal(0.74, GenerationService.StartTime(0.05, 0.15), 2);
        Assert.Equal(0, GenerationService.StartTime(1, 0.15));
        using var x1 = s.Statistics!.Normalize(fx.Editor.Encode(fx.Editor.Prepare(new[] { image })));
        double Distance(GenerationResult r) { using var d = (r.Latents - x1).square().mean(); return Math.Sqrt(d.item<float>()); }
        using var low = s.Vary(image, 0.05, plan);
        using var high = s.Vary(image, 0.8, plan);
        double dLow = Distance(low), dHigh = Distance(high), dPlain = Distance(plain);
        log.WriteLine($"rms distance to the image's latent: strength 0.05 {dLow:F3}, 0.8 {dHigh:F3}, plain sampling {dPlain:F3}");
        Assert.True(dLow < 0.5 * dHigh, $"strength 0.05 ({dLow:F3}) should stay much nearer the image than 0.8 ({dHigh:F3})");
        Assert.True(dLow < 0.5 * dPlain, $"strength 0.05 ({dLow:F3}) vs plain samples ({dPlain:F3})");
        Assert.Equal(4, (int)low.Images!.shape[0]);
        Assert.Contains("strength must be a finite number in [0.001, 1], got 0", Refusal(() => s.Vary(image, 0, plan)));
    }

    [Fact]
    public void MixTakesSemanticChannelsFromOneImageAndResidualChannelsFromTheOther()
    {
        var e = fx.Editor;
        Assert.Equal(128, e.SemanticChannels);
        Assert.Equal(8, e.ResidualChannels);
        using var a = BundledService.Image("sneaker");
        using var b = BundledService.Image("bag");
        using var scope = torch.NewDisposeScope();
        var z = e.Encode(e.Prepare(new[] { a, b }));
        var mixed = e.MixLatents(z.narrow(0, 0, 1), z.narrow(0, 1, 1));
        Assert.True(Reference.Same(mixed.narrow(1, 0, 128), z.narrow(0, 0, 1).narrow(1, 0, 128)));
        Assert.True(Reference.Same(mixed.narrow(1, 128, 8), z.narrow(0, 1, 1).narrow(1, 128, 8)));

        var recA = e.Reconstruct(new[] { a });
        Reference.Close(recA, e.Mix(a, a), 1e-5, "mixing an image with itself is its reconstruction");
        var mix = e.Mix(a, b);
        var recB = e.Reconstruct(new[] { b });
        double fromA = (mix - recA).abs().mean().item<float>(), fromB = (mix - recB).abs().mean().item<float>();
        log.WriteLine($"mean |mix - rec(semantic image)| {fromA:F4}, |mix - rec(detail image)| {fromB:F4}");
        Assert.True(fromA > 1e-3, "the detail image's residual channels change the result");
        Assert.True(fromA < fromB, "the result shows the semantic image more than the detail image");
    }

    [Fact]
    public void InterpolationPathsEndAtTheirEndpoints()
    {
        var e = fx.Editor;
        using var a = BundledService.Image("sneaker");
        using var b = BundledService.Image("bag");
        using var scope = torch.NewDisposeScope();
        var frames = e.Interpolate(a, b, 5);
        Assert.Equal(new long[] { 5, 3, 32, 32 }, frames.shape);
        var rec = e.Decode(e.Encode(e.Prepare(new[] { a, b })));
        Reference.Close(rec[0], frames[0], 1e-5, "first frame = reconstruction of a");
        Reference.Close(rec[1], frames[4], 1e-5, "last frame = reconstruction of b");

        // Noise: spherical paths keep the norm that straight ones lose halfway.
        var g = new Generator(5);
        var x = torch.randn(new long[] { 16, 136 }, generator: g);
        var y = torch.randn(new long[] { 16, 136 }, generator: g);
        var fr = LatentPath.Fractions(5);
        var sl = LatentPath.Slerp(x, y, fr);
        var li = LatentPath.Lerp(x, y, fr);
        Assert.True(Reference.Same(sl[0], x) && Reference.Same(sl[4], y));
        double nx = x.norm().item<float>(), ny = y.norm().item<float>();
        double mid = sl[2].norm().item<float>(), midLine = li[2].norm().item<float>();
        log.WriteLine($"norms: x {nx:F2}, y {ny:F2}, slerp midpoint {mid:F2}, lerp midpoint {midLine:F2}");
        Assert.InRange(mid, 0.97 * Math.Min(nx, ny), 1.03 * Math.Max(nx, ny));
        Assert.True(midLine < 0.8 * Math.Min(nx, ny), "a straight line between two noises passes inside the sphere");

        // Between two samples: the ends are the seeds' first samples.
        var s = fx.Service;
        var plan = s.Plan(new GenerationRequest { Classes = new[] { "sneaker" }, N = 1, Steps = 3 }, Small);
        using var path = s.InterpolateSeeds(3, 8, 4, plan);
        using var s3 = s.Generate(s.Plan(new GenerationRequest { Classes = new[] { "sneaker" }, N = 1, Steps = 3, Seed = 3 }, Small));
        using var s8 = s.Generate(s.Plan(new GenerationRequest { Classes = new[] { "sneaker" }, N = 1, Steps = 3, Seed = 8 }, Small));
        Reference.Close(s3.Latents[0], path.Latents[0], 1e-5, "first frame = seed 3's sample");
        Reference.Close(s8.Latents[0], path.Latents[3], 1e-5, "last frame = seed 8's sample");
        Assert.Equal(4, path.Columns);
    }

    [Fact]
    public void MixInterpolateAndVaryCommandsWriteTheirImagesAndRefuseBadInput()
    {
        string dir = Reference.TempDir();
        string a = BundledService.ImagePath("sneaker"), b = BundledService.ImagePath("bag");
        var mix = Reference.RunCli("mix", "--semantic", a, "--detail", b, "--out", Path.Combine(dir, "mix.png"));
        Assert.True(mix.Code == 0, mix.Err + mix.Out);
        using (var m = ImageFiles.LoadRgb(Path.Combine(dir, "mix.png"))) Assert.Equal(new long[] { 3, 32, 32 }, m.shape);
        var strip = Reference.RunCli("interpolate", a, b, "--frames", "4", "--out", Path.Combine(dir, "strip.png"), "--out-dir", Path.Combine(dir, "frames"));
        Assert.True(strip.Code == 0, strip.Err + strip.Out);
        using (var st = ImageFiles.LoadRgb(Path.Combine(dir, "strip.png"))) Assert.Equal(new long[] { 3, 36, 4 * 34 + 2 }, st.shape);
        Assert.Equal(4, Directory.GetFiles(Path.Combine(dir, "frames"), "frame-*.png").Length);
        var seeds = Reference.RunCli("interpolate", "--seeds", "1,2", "--class", "bag", "--frames", "3", "--steps", "2", "--out", Path.Combine(dir, "seeds.png"));
        Assert.True(seeds.Code == 0, seeds.Err + seeds.Out);
        var vary = Reference.RunCli("vary", a, "--strength", "0.4", "--class", "sneaker", "--n", "2", "--steps", "3", "--out-dir", Path.Combine(dir, "vary"));
        Assert.True(vary.Code == 0, vary.Err + vary.Out);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "vary"), "variation-*.png").Length);

        static void Refused((int Code, string Out, string Err) r, string expected)
        {
            Assert.True(r.Code == 1, $"exit {r.Code}: {r.Err}{r.Out}");
            Assert.Equal($"error: {expected}", r.Err.Trim());
        }
        Refused(Reference.RunCli("vary", a, "--strength", "0", "--out", Path.Combine(dir, "v.png")), "--strength must be a finite number in [0.001, 1], got 0");
        Refused(Reference.RunCli("vary", a, "--class", "sneker", "--out", Path.Combine(dir, "v.png")),
            "--class: unknown class 'sneker' (classes, index = position: 0 ankle-boot, 1 bag, 2 coat, 3 dress, 4 pullover, 5 sandal, 6 shirt, 7 sneaker, 8 t-shirt, 9 trouser; indices follow the sorted training folder names, not a data set's own label ids)");
        Refused(Reference.RunCli("interpolate", a, "--out", Path.Combine(dir, "i.png")), "give two images (or --seeds A,B), got 1");
        Refused(Reference.RunCli("interpolate", "--seeds", "1", "--out", Path.Combine(dir, "i.png")), "--seeds must be two whole numbers A,B, not '1'");
        string notImage = Path.Combine(dir, "notes.png");
        File.WriteAllText(notImage, "not an image");
        Refused(Reference.RunCli("mix", "--semantic", notImage, "--detail", b, "--out", Path.Combine(dir, "m.png")), $"{notImage}: not a decodable image (corrupt or unsupported format)");
        Refused(Reference.RunCli("mix", "--semantic", Path.Combine(dir, "missing.png"), "--detail", b, "--out", Path.Combine(dir, "m.png")), $"--semantic {Path.Combine(dir, "missing.png")}: no such file or folder");
    }
}
