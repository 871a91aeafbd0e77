using System.Diagnostics;
using SvgDiffusion.Data;
using SvgDiffusion.Pipelines;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The bundled model loaded once through the public entry point, in fp32 (as <see cref="BundledService"/>).</summary>
public sealed class BundledPipeline : IDisposable
{
    public SvgPipeline Pipe { get; } = SvgPipeline.FromPretrained(BundledModel.Name, "fp32");
    public void Dispose() => Pipe.Dispose();
}

/// <summary>
/// The library's one entry point (<see cref="SvgPipeline"/>): a thin layer over <see cref="GenerationService"/>,
/// so it must give exactly the service's images for the same request, and the example program built on it must run.
/// </summary>
public class SvgPipelineTests(BundledPipeline fx, BundledService service, ITestOutputHelper log) : IClassFixture<BundledPipeline>, IClassFixture<BundledService>
{
    SvgPipeline Pipe => fx.Pipe;
    static readonly GenerationLimits Limits = GenerationLimits.Cli;

    static string Refusal(Action a) => Assert.Throws<SvgdException>(a).Message;

    static void AssertEqual(Tensor expected, Tensor actual, string what)
    {
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.equal(actual).all().item<bool>(), $"{what}: differs by {(expected - actual).abs().max().item<float>()}");
    }

    [Fact]
    public void FromPretrainedLoadsTheBundledModelWithItsNamesAndSize()
    {
        Assert.Equal("fashion-mnist", Pipe.Name);
        Assert.Equal(service.Service.Classes.Names, Pipe.ClassNames);
        Assert.Equal(service.Service.Autoencoder!.ImageSize, Pipe.ImageSize);
        Assert.Equal(ScalarType.Float32, Pipe.Precision);
        // "auto" is resolved as the CLI's --precision auto is.
        using var auto = SvgPipeline.FromPretrained(Path.Combine(ModelFolder.BundledRoot, BundledModel.Name));
        Assert.Equal(Runtime.Precision.Resolve("auto", allowFp64: false), auto.Precision);
        Assert.Equal("fashion-mnist", auto.Name);
    }

    [Fact]
    public void BadNamesAndPrecisionsAreOneLineThatNamesTheBundledModels()
    {
        string m = Refusal(() => SvgPipeline.FromPretrained("no-such-model"));
        Assert.DoesNotContain('\n', m);
        Assert.Equal($"model no-such-model: no such file, folder or bundled model (bundled: {string.Join(", ", ModelFolder.BundledNames)})", m);
        Assert.Contains("fashion-mnist", m);
        string p = Refusal(() => SvgPipeline.FromPretrained(BundledModel.Name, "fp16"));
        Assert.Equal("precision must be one of auto, fp32, bf16, not 'fp16'", p);
        string dir = Reference.TempDir();
        Assert.StartsWith($"model {dir}: a folder without dit.safetensors", Refusal(() => SvgPipeline.FromPretrained(dir)));
    }

    [Fact]
    public void GenerateGivesTheServicesImagesForTheSameRequest()
    {
        var sw = Stopwatch.StartNew();
        using var images = Pipe.Generate(new[] { "sneaker", "bag" }, perClass: 2, steps: 5, seed: 7);
        log.WriteLine($"pipeline: 4 samples, 5 steps in {sw.Elapsed.TotalSeconds:F1} s");
        var plan = service.Service.Plan(new GenerationRequest { Classes = new[] { "sneaker", "bag" }, N = 2, Steps = 5, Seed = 7 }, Limits);
        using var expected = service.Service.Generate(plan);
        Assert.Equal(new long[] { 4, 3, Pipe.ImageSize, Pipe.ImageSize }, images.Images.shape);
        Assert.Equal(new[] { "sneaker", "bag" }, images.RowNames);
        AssertEqual(expected.Images!, images.Images, "pipeline vs service");
        using var grid = expected.Grid();
        using var mine = images.Grid();
        Assert.Equal(ImageFiles.EncodePng(grid), ImageFiles.EncodePng(mine));

        // Without classes: one row per class, as `svgd sample` with the bundled model.
        using var all = Pipe.Generate(perClass: 1, steps: 1);
        Assert.Equal(Pipe.ClassNames, all.RowNames);
        Assert.Equal(Pipe.ClassNames.Count, all.Count);
        // The library's refusals, in its spelling.
        Assert.Equal("steps must be a positive whole number, got 0", Refusal(() => Pipe.Generate(steps: 0)));
        Assert.StartsWith("classes: unknown class 'unicorn'", Refusal(() => Pipe.Generate(new[] { "unicorn" })));
    }

    [Fact]
    public void VaryAndRecolorAreTheServicesAndDeterministic()
    {
        string boot = BundledService.ImagePath("ankle-boot"), bag = BundledService.ImagePath("bag");
        int s = Pipe.ImageSize;
        using var v1 = Pipe.Vary(boot, n: 2, steps: 4, seed: 3);
        using var v2 = Pipe.Vary(boot, n: 2, steps: 4, seed: 3);
        Assert.Equal(new long[] { 2, 3, s, s }, v1.Images.shape);
        AssertEqual(v1.Images, v2.Images, "vary twice");
        var varyPlan = service.Service.Plan(new GenerationRequest { N = 2, Steps = 4, Seed = 3 }, Limits, unconditionalByDefault: true, classesField: "class");
        using (var rgb = BundledService.Image("ankle-boot"))
        using (var expected = service.Service.Vary(rgb, GenerationRequest.DefaultStrength, varyPlan))
            AssertEqual(expected.Images!, v1.Images, "vary: pipeline vs service");

        using var r1 = Pipe.Recolor(boot, likePath: bag, steps: 4, seed: 3);
        using var r2 = Pipe.Recolor(boot, likePath: bag, steps: 4, seed: 3);
        Assert.Equal(new long[] { 1, 3, s, s }, r1.Images.shape);
        AssertEqual(r1.Images, r2.Images, "recolor twice");
        var recolorPlan = service.Service.Plan(new GenerationRequest { N = 1, Steps = 4, Seed = 3 }, Limits, unconditionalByDefault: true, classesField: "class");
        using (var a = BundledService.Image("ankle-boot"))
        using (var b = BundledService.Image("bag"))
        using (var expected = service.Service.Recolor(a, b, GenerationRequest.DefaultRecolorStrength, recolorPlan))
            AssertEqual(expected.Images!, r1.Images, "recolor: pipeline vs service");
        using var byClass = Pipe.Recolor(boot, cls: "sandal", n: 2, steps: 2);
        Assert.Equal(2, byClass.Count);

        Assert.Equal("give likePath (an image to take the colours from) or cls (new colours of a class), or both", Refusal(() => Pipe.Recolor(boot)));
        Assert.Equal("strength must be a finite number in [0.001, 1], got 2", Refusal(() => Pipe.Vary(boot, strength: 2)));
        Assert.StartsWith("class: unknown class 'unicorn'", Refusal(() => Pipe.Vary(boot, cls: "unicorn")));
        Assert.EndsWith("no such image file", Refusal(() => Pipe.Vary(Path.Combine(Reference.TempDir(), "missing.png"))));
    }

    [Fact]
    public void MixEncodeAndDecodeAreTheEditorsAndDeterministic()
    {
        string boot = BundledService.ImagePath("ankle-boot"), bag = BundledService.ImagePath("bag");
        int s = Pipe.ImageSize;
        using var mix = Pipe.Mix(boot, bag);
        using var again = Pipe.Mix(boot, bag);
        Assert.Equal(new long[] { 1, 3, s, s }, mix.Images.shape);
        AssertEqual(mix.Images, again.Images, "mix twice");
        using (var a = BundledService.Image("ankle-boot"))
        using (var b = BundledService.Image("bag"))
        using (var expected = service.Editor.Mix(a, b))
            AssertEqual(expected, mix.Images, "mix: pipeline vs editor");

        using var z = Pipe.Encode(boot);
        var ae = service.Editor.Autoencoder;
        Assert.Equal(new long[] { 1, ae.Config.LatentChannels, ae.LatentSize, ae.LatentSize }, z.shape);
        using var z2 = Pipe.Encode(boot);
        AssertEqual(z, z2, "encode twice");
        // The space `svgd encode` writes (and `svgd decode` reads).
        string file = Path.Combine(Reference.TempDir(), "latent.safetensors");
        var (code, _, err) = Reference.RunCli("encode", "--images", boot, "--autoencoder", BundledModel.Name, "--precision", "fp32", "--out", file);
        Assert.True(code == 0, err);
        using (var written = Checkpoints.SafeTensors.Load(file)["latent"])
            AssertEqual(written, z, "pipeline vs svgd encode");
        using var decoded = Pipe.Decode(z);
        Assert.Equal(new long[] { 1, 3, s, s }, decoded.Images.shape);
        using (var a = BundledService.Image("ankle-boot"))
        using (var expected = service.Editor.Reconstruct(new[] { a }))
            AssertEqual(expected, decoded.Images, "encode + decode vs the editor's reconstruction");
        using var one = Pipe.Decode(z[0]);
        AssertEqual(decoded.Images, one.Images, "a [C, h, w] latent");
        using var wrong = torch.zeros(1, 3, 4, 4);
        Assert.Equal($"decoding needs latents [B, {ae.Config.LatentChannels}, h, w], got [1, 3, 4, 4]", Refusal(() => Pipe.Decode(wrong)));
    }

    [Fact]
    public void SaveWritesThePngOfTheImageOrTheGridAndSaveEachOnePerImage()
    {
        string dir = Reference.TempDir();
        using var images = Pipe.Generate(new[] { "bag", "coat" }, perClass: 2, steps: 2, seed: 1);
        string grid = images.Save(Path.Combine(dir, "sub", "grid.png"));
        using (var g = ImageFiles.LoadRgb(grid))
        using (var expected = images.Grid())
            Assert.Equal(expected.shape, g.shape);
        var each = images.SaveEach(Path.Combine(dir, "each"));
        Assert.Equal(new[] { "000-bag.png", "001-bag.png", "002-coat.png", "003-coat.png" }, each.Select(Path.GetFileName));
        using var one = Pipe.Mix(each[0], each[2]);
        string single = one.Save(Path.Combine(dir, "mix.png"));
        using var m = ImageFiles.LoadRgb(single);
        Assert.Equal(new long[] { 3, Pipe.ImageSize, Pipe.ImageSize }, m.shape);
        // What was written is what the images hold, to the 8-bit rounding.
        using var pixels = ((one[0] + 1) / 2 * 255).round().clamp(0, 255).to(ScalarType.Byte);
        Assert.True(pixels.equal(m).all().item<bool>());
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(single).Take(4));
    }

    /// <summary>
    /// Builds and runs examples/GenerateAndRecolor as a user would (<c>dotnet run</c>), with 2 solver steps.
    /// The build dominates: 14-26 s in all when the library is already built in Release, 41 s after deleting the
    /// library's and the example's Release outputs (2 busy cores); filter it out with <c>--filter "Category!=Example"</c>.
    /// </summary>
    [Fact, Trait("Category", "Example")]
    public async Task ExampleProgramBuildsAndWritesBothPngs()
    {
        string outDir = Reference.TempDir();
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Reference.RepoRoot,
        };
        foreach (var a in new[] { "run", "--project", Path.Combine("examples", "GenerateAndRecolor"), "-c", "Release", "--", "fashion-mnist", outDir, "2" })
            psi.ArgumentList.Add(a);
        // No build server or MSBuild nodes left behind by the test.
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        psi.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(10)))
        {
            try { await p.WaitForExitAsync(timeout.Token); }
            catch (OperationCanceledException)
            {
                p.Kill(entireProcessTree: true);
                Assert.Fail("the example did not finish in 10 minutes");
            }
        }
        string output = await stdout, errors = await stderr;
        log.WriteLine($"dotnet run (build + run): {sw.Elapsed.TotalSeconds:F1} s");
        log.WriteLine(output);
        Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {errors}{output}");
        foreach (var name in new[] { "samples.png", "edit.png" })
        {
            string path = Path.Combine(outDir, name);
            Assert.True(File.Exists(path), $"{name} missing; output: {output}");
            Assert.Contains($"wrote {path}", output);
        }
        using var edit = ImageFiles.LoadRgb(Path.Combine(outDir, "edit.png"));
        Assert.Equal(new long[] { 3, Pipe.ImageSize, Pipe.ImageSize }, edit.shape);
    }
}
