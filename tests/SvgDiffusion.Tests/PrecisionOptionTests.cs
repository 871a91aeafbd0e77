using Spectre.Console.Testing;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Cli;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using SvgDiffusion.Sampling;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// --precision on every inference command, and what bf16 changes against fp32. bf16 is emulated on CPUs
/// without native support (about 1% of the fp32 speed), so the bf16 runs here are a few small batches.
/// </summary>
public class PrecisionOptionTests(ITestOutputHelper log)
{
    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var console = new TestConsole();
        console.Profile.Width = 200;
        var err = new StringWriter();
        int code = SvgdCli.Run(args, console, err);
        return (code, console.Output, err.ToString());
    }

    // Required options get a missing file: the precision rule runs before the path checks, so a good
    // precision shows as the path error and a bad one as the precision error.
    static readonly Dictionary<string, string[]> Commands = new()
    {
        ["sample"] = new[] { "--model", "missing.safetensors", "--out", "x.png" },
        ["sample-eval"] = new[] { "--model", "missing.safetensors", "--autoencoder", "missing.safetensors", "--out", "x.npz" },
        ["encode"] = new[] { "--autoencoder", "missing.safetensors", "--images", "missing", "--out", "x.safetensors" },
        ["decode"] = new[] { "--autoencoder", "missing.safetensors", "--latents", "missing.safetensors", "--out", "x" },
        ["reconstruct"] = new[] { "--autoencoder", "missing.safetensors", "--images", "missing", "--out", "x" },
        ["features"] = new[] { "--encoder", "missing.pth", "--images", "missing", "--out", "x.safetensors" },
        ["probe classify"] = new[] { "--encoder", "missing.pth", "--train", "missing", "--val", "missing" },
        ["probe segment"] = new[] { "--encoder", "missing.pth", "--train", "missing", "--val", "missing" },
    };

    /// <summary>The command's words, then its options with every value a path under a fresh temporary folder.</summary>
    static string[] Args(string command, params string[] extra)
    {
        string dir = Reference.TempDir();
        return command.Split(' ').Concat(Commands[command].Select(x => x.StartsWith('-') ? x : Path.Combine(dir, x))).Concat(extra).ToArray();
    }

    [Theory]
    [InlineData("sample")]
    [InlineData("sample-eval")]
    [InlineData("encode")]
    [InlineData("decode")]
    [InlineData("reconstruct")]
    [InlineData("features")]
    [InlineData("probe classify")]
    [InlineData("probe segment")]
    public void EveryInferenceCommandTakesPrecisionAndRefusesABadOneInOneLine(string command)
    {
        var (code, stdout, stderr) = Run(Args(command, "--precision", "fp16"));
        Assert.Equal(1, code);
        string line = stderr.Trim();
        Assert.DoesNotContain('\n', line);
        Assert.Contains("--precision must be one of auto, fp32, bf16", line);
        Assert.Contains("'fp16'", line);

        foreach (var good in new[] { "auto", "fp32", "bf16", "BF16" })
        {
            (code, stdout, stderr) = Run(Args(command, "--precision", good));
            Assert.Equal(1, code);
            Assert.DoesNotContain("precision", stderr);
            Assert.Contains("no such file", stderr);
        }
    }

    [Theory]
    [InlineData("encode", true)]
    [InlineData("decode", true)]
    [InlineData("sample", false)]
    [InlineData("reconstruct", false)]
    public void Fp64IsOfferedOnlyWhereTheWholeComputationRunsInIt(string command, bool allowed)
    {
        var (code, _, stderr) = Run(Args(command, "--precision", "fp64"));
        Assert.Equal(1, code);
        Assert.Equal(!allowed, stderr.Contains("--precision must be one of auto, fp32, bf16,"));
    }

    // Precision.Resolve itself is tested in KernelTests.PrecisionTests; this is the command's default.
    [Fact]
    public void SampleDefaultsToAutoResolvedForThisCpu()
    {
        var expected = CpuInfo.Current.NativeBf16 ? "bf16" : "fp32";
        string dir = Reference.TempDir();
        var (code, stdout, stderr) = Run("sample", "--n", "1", "--steps", "1", "--no-decode", "--latent-out", Path.Combine(dir, "z.safetensors"));
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains($", {expected}", stdout);
        log.WriteLine($"auto on this CPU: {expected}");
    }

    [Fact]
    public void FeaturesStillTakesTheOldDtypeName()
    {
        string dir = Reference.TempDir();
        var (code, _, stderr) = Run("features", "--encoder", Reference.File_("dinov3_swiglu.pth"), "--tensor", Reference.File_("dinov3_swiglu.io.safetensors"), "--key", "x", "--out", Path.Combine(dir, "f.safetensors"), "--dtype", "fp16");
        Assert.Equal(1, code);
        Assert.Contains("--dtype must be fp32 or bf16", stderr);
        (code, _, stderr) = Run("features", "--encoder", Reference.File_("dinov3_swiglu.pth"), "--tensor", Reference.File_("dinov3_swiglu.io.safetensors"), "--key", "x", "--out", Path.Combine(dir, "f.safetensors"), "--dtype", "bf16", "--precision", "bf16");
        Assert.Equal(1, code);
        Assert.Contains("give --precision only", stderr);
    }

    static (double Max, double Mean) Diff(Tensor a, Tensor b)
    {
        using var d = (a.to(ScalarType.Float64) - b.to(ScalarType.Float64)).abs();
        return (d.max().item<double>(), d.mean().item<double>());
    }

    static double Rms(Tensor a)
    {
        using var r = a.to(ScalarType.Float64).square().mean().sqrt();
        return r.item<double>();
    }

    (double Max, double Mean) Report(string what, Tensor fp32, Tensor bf16)
    {
        Assert.Equal(ScalarType.Float32, bf16.dtype);
        var (max, mean) = Diff(fp32, bf16);
        log.WriteLine($"{what}: bf16 vs fp32 max abs {max:g3}, mean abs {mean:g3} (fp32 rms {Rms(fp32):g3})");
        return (max, mean);
    }

    [Fact]
    public void Bf16DiTOnTheReferenceVectorsStaysNearFp32()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var io = Reference.Io("svg_dit");
        var cfg = ConfigJson.Load<DiTConfig>(Reference.File_("svg_dit.json"), "model");
        using var model = DiTCheckpoint.Load(Reference.File_("svg_dit.pt"), cfg);
        model.eval();
        var sampler = Sampler.Create("euler", 25, 0.15);
        var guidance = GuidanceSchedule.Parse(1.5, "constant");
        var out32 = model.Forward(io["x"], io["t"], io["y"]);
        var sample32 = sampler.Sample(model, io["sample.z"], io["sample.cond"], io["sample.null"], guidance);

        model.SetComputePrecision(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, model.ComputePrecision);
        var out16 = model.Forward(io["x"], io["t"], io["y"]);
        var sample16 = sampler.Sample(model, io["sample.z"], io["sample.cond"], io["sample.null"], guidance);
        var (fmax, fmean) = Report("svg_dit forward", out32, out16);
        var (smax, smean) = Report("svg_dit 25-step Euler sample, CFG 1.5", sample32, sample16);
        // bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); errors of a few steps add up.
        Assert.True(fmean < 0.02 * Rms(out32) && fmax < 0.1 * Rms(out32) + 0.05, $"forward: {fmax:g3} / {fmean:g3}");
        Assert.True(smean < 0.02 * Rms(sample32) && smax < 0.2 * Rms(sample32), $"sample: {smax:g3} / {smean:g3}");

        // The weights were rounded: going back would quietly give neither precision's numbers.
        Assert.Throws<SvgdException>(() => model.SetComputePrecision(ScalarType.Float32));
    }

    [Fact]
    public void Bf16AutoencoderOnTheReferenceVectorsStaysNearFp32()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var io = Reference.Io("svg_autoencoder");
        var cfg = ConfigJson.Load<SvgAutoencoderConfig>(Reference.File_("svg_autoencoder.json"));
        using var model = SvgAutoencoderCheckpoint.Load(Reference.File_("svg_autoencoder.ckpt"), cfg);
        model.eval();
        var latent32 = model.Encode(io["image_dino"]);
        var rec32 = model.Decode(io["latent"]);
        model.to(ScalarType.BFloat16);
        var latent16 = model.Encode(io["image_dino"].to(ScalarType.BFloat16)).to(ScalarType.Float32);
        var rec16 = model.Decode(io["latent"].to(ScalarType.BFloat16)).to(ScalarType.Float32);
        var (lmax, lmean) = Report("svg_autoencoder latent", latent32, latent16);
        var (rmax, rmean) = Report("svg_autoencoder reconstruction", rec32, rec16);
        Assert.True(lmean < 0.03 * Rms(latent32), $"latent: {lmax:g3} / {lmean:g3}");
        Assert.True(rmean < 0.03 * Rms(rec32), $"reconstruction: {rmax:g3} / {rmean:g3}");
    }

    [Fact]
    public void Bf16SampleOfTheBundledModelStaysWithinToleranceOfFp32()
    {
        using var scope = torch.NewDisposeScope();
        string dir = Path.Combine(Reference.RepoRoot, "models", BundledModel.Name);
        using var dit = DiTCheckpoint.Load(Path.Combine(dir, "dit.safetensors"));
        dit.eval();
        var labels = new[] { 0, 5, 9 };
        var generator = new SvgGenerator(dit, Sampler.Create("euler", 5), GuidanceSchedule.Parse(1.5, "constant"));
        var noise = torch.stack(Enumerable.Range(0, labels.Length).Select(i => generator.Noise(0, i)).ToArray());
        var latent32 = generator.SampleLatents(noise, labels);
        generator.SetPrecision(ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, generator.Precision);
        // Seeds give the same noise in every precision: it is drawn in fp32 whatever the networks run in.
        Assert.True(Reference.Same(noise, torch.stack(Enumerable.Range(0, labels.Length).Select(i => generator.Noise(0, i)).ToArray())));
        var latent16 = generator.SampleLatents(noise, labels);
        var (max, mean) = Report("bundled model, 3 samples, 5 Euler steps, CFG 1.5", latent32, latent16);
        // Stated tolerance (README, Precision): mean abs < 0.03, max abs < 0.3 on latents of rms ~0.9 (measured: 0.011, 0.075).
        Assert.True(mean < 0.03 && max < 0.3, $"bf16 vs fp32: max {max:g3}, mean {mean:g3}");
    }
}
