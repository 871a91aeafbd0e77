using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Spectre.Console.Testing;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Cli;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// The numerics issue: oneDNN's conv2d is wrong on Zen 5 when the input channels are not a multiple of
/// 16. These tests hold whichever CPU they run on: every conv path the project may choose must match a
/// float64 reference, and the bundled model must reproduce its stored float64 output.
/// </summary>
public class KernelTests
{
    /// <summary>The issue's grid: first layers (1, 3, 8), off the vector width (20, 136, 388, 392, 520), on it (384).</summary>
    static readonly long[] GridInChannels = { 1, 3, 8, 20, 136, 384, 388, 392, 520 };

    static List<KernelCheckResult> ConvGrid(ConvPath path)
    {
        using var g = new Generator(1234);
        var results = new List<KernelCheckResult>();
        foreach (long ic in GridInChannels)
            foreach (long k in new long[] { 1, 3 })
                foreach (long s in new long[] { 1, 2 })
                    results.AddRange(KernelCheck.CheckConv(g, path, new[] { ScalarType.Float32, ScalarType.BFloat16 }, batch: 2, ic, oc: 32, size: 16, k, s, pad: k / 2));
        return results;
    }

    static void AssertAllPass(IEnumerable<KernelCheckResult> results, string what)
    {
        var failed = results.Where(r => !r.Passed).ToList();
        Assert.True(failed.Count == 0, $"{what}: " + string.Join("; ", failed.Take(8).Select(KernelGuard.Describe)));
    }

    [Fact]
    public void ConvolutionsOnThisMachinesPathMatchFloat64ForwardAndBackward()
    {
        var results = ConvGrid(KernelGuard.ConvPath);
        Assert.Equal(GridInChannels.Length * 2 * 2 * 2 * 2, results.Count);
        AssertAllPass(results, $"conv on the chosen path ({KernelGuard.ConvPath})");
        // fp32 must be far better than its tolerance: a right kernel is off by ~1e-6.
        Assert.True(results.Where(r => r.Dtype == "fp32").Max(r => r.Error) < 2e-5);
    }

    [Fact]
    public void PaddedChannelPathMatchesFloat64()
    {
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            LibTorchNative.OneDnnEnabled = true;
            AssertAllPass(ConvGrid(ConvPath.PaddedChannels), "padded-channel conv");
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
    }

    [Fact]
    public void OneDnnOffPathMatchesFloat64()
    {
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            LibTorchNative.OneDnnEnabled = false;
            Assert.False(LibTorchNative.OneDnnEnabled);
            AssertAllPass(ConvGrid(ConvPath.OneDnnOff), "conv with oneDNN off");
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
        Assert.Equal(was, LibTorchNative.OneDnnEnabled);
    }

    [Theory]
    [InlineData(1, 16)]
    [InlineData(3, 16)]
    [InlineData(16, 16)]
    [InlineData(20, 32)]
    [InlineData(48, 64)]
    [InlineData(136, 160)]
    [InlineData(384, 384)]
    [InlineData(392, 416)]
    [InlineData(520, 544)]
    public void InputChannelsGoToSixteenOrAMultipleOf32(long inChannels, long expected) =>
        Assert.Equal(expected, Convolution.PaddedInChannels(inChannels));

    [Theory]
    [InlineData(3, 16)]
    [InlineData(16, 16)]
    [InlineData(136, 144)]
    [InlineData(384, 384)]
    public void OutputChannelsGoToAMultipleOf16(long outChannels, long expected) =>
        Assert.Equal(expected, Convolution.PaddedOutChannels(outChannels));

    [Fact]
    public void PaddedConvolutionGradientsKeepTheirShapes()
    {
        using var scope = torch.NewDisposeScope();
        var x = torch.randn(2, 136, 8, 8).requires_grad_();
        var w = torch.randn(24, 136, 3, 3).requires_grad_();
        var b = torch.randn(24).requires_grad_();
        var y = Convolution.Conv2d(x, w, b, (1, 1), (1, 1), (1, 1), 1, ConvPath.PaddedChannels);
        y.sum().backward();
        Assert.Equal(new long[] { 2, 24, 8, 8 }, y.shape);
        Assert.Equal(x.shape, x.grad!.shape);
        Assert.Equal(w.shape, w.grad!.shape);
        Assert.Equal(b.shape, b.grad!.shape);
    }

    [Fact]
    public void TheWholeCheckPassesAndIsCachedPerMachine()
    {
        string dir = Reference.TempDir();
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            var first = KernelGuard.Evaluate(dir, useCache: true);
            Assert.True(first.AllPassed, string.Join("; ", first.Results.Where(r => !r.Passed).Select(KernelGuard.Describe)));
            Assert.Contains(first.Path, KernelGuard.Candidates);
            foreach (var kernel in new[] { "conv2d", "conv2d backward", "linear", "linear backward", "scaled_dot_product_attention", "group_norm", "layer_norm" })
                foreach (var dtype in new[] { "fp32", "bf16" })
                    Assert.Contains(first.Results, r => r.Kernel == kernel && r.Dtype == dtype);
            string file = Path.Combine(dir, $"kernels-{first.MachineKey}.json");
            Assert.True(File.Exists(file));

            var second = KernelGuard.Evaluate(dir, useCache: true);
            Assert.Equal(first.CheckedAtUtc, second.CheckedAtUtc); // read, not rerun
            Assert.Equal(first.Results.Count, second.Results.Count);

            // A verdict whose evidence does not hold up is checked again.
            File.WriteAllText(file, File.ReadAllText(file).Replace("\"AllPassed\": true", "\"AllPassed\": false"));
            Assert.NotEqual(first.CheckedAtUtc, KernelGuard.Evaluate(dir, useCache: true).CheckedAtUtc);
            File.WriteAllText(file, "{ truncated");
            Assert.True(KernelGuard.Evaluate(dir, useCache: true).AllPassed);
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
    }

    [Fact]
    public void MachineKeyFollowsTheOneDnnEnvironment()
    {
        string before = KernelGuard.MachineKey();
        Environment.SetEnvironmentVariable("ONEDNN_MAX_CPU_ISA", "SSE41");
        try { Assert.NotEqual(before, KernelGuard.MachineKey()); }
        finally { Environment.SetEnvironmentVariable("ONEDNN_MAX_CPU_ISA", null); }
        Assert.Equal(before, KernelGuard.MachineKey());
    }

    [Fact]
    public void NoConvolutionBypassesTheCheckedPath()
    {
        // Every conv must reach Convolution.Conv2d, or the verdict does not protect it.
        var direct = new Regex(@"(nn\.Conv[123]d\(|functional\.conv[123]d\(|functional\.conv_transpose|ConvTranspose[123]d\(|(?<![A-Za-z_.])Conv[123]d\()");
        string src = Path.Combine(Reference.RepoRoot, "src");
        var offenders = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") && !f.EndsWith(Path.Combine("Runtime", "Convolution.cs")))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(t => direct.IsMatch(t.line) && !t.line.TrimStart().StartsWith("//"))
            .Select(t => $"{Path.GetRelativePath(src, t.f)}:{t.i + 1}")
            .ToList();
        Assert.True(offenders.Count == 0, "convolutions outside Runtime/Convolution.cs: " + string.Join(", ", offenders));
    }

    static string BundledAutoencoder => Path.Combine(Reference.RepoRoot, "models", "fashion-mnist", "autoencoder.safetensors");
    static string Fp64Dir => Path.Combine(Reference.RepoRoot, "tests", "data", "bundled-fp64");

    [Fact]
    public void BundledModelReproducesItsFloat64EncodingAndDecoding()
    {
        var expectedLatent = SafeTensors.Load(Path.Combine(Fp64Dir, "latent.safetensors"))["latent"];
        var expectedImages = SafeTensors.Load(Path.Combine(Fp64Dir, "images.safetensors"))["images"];
        using var ae = SvgAutoencoderCheckpoint.Load(BundledAutoencoder);
        ae.eval();
        using var _ = torch.inference_mode();
        var folder = new ImageFolder(Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist"));
        Assert.Equal(expectedLatent.shape[0], folder.Count);
        using var pixels = folder.CenterBatch(Enumerable.Range(0, folder.Count), ae.Config.ResidualVit.ImageSize);
        using var input = SvgAutoencoder.ToEncoderInput(pixels);
        using var latent = ae.Encode(input);
        // Latents reach ~30 in magnitude; fp32 through ResNet-18 stays within 1e-6 of that.
        Reference.Close(expectedLatent, latent, 2e-4, "bundled encoder vs its float64 reference");
        using var images = ae.Decode(expectedLatent);
        Reference.Close(expectedImages, images, 1e-4, "bundled decoder vs its float64 reference");
    }

    /// <summary>Runs svgd in its own process: oneDNN reads ONEDNN_MAX_CPU_ISA once per process.</summary>
    static void RunSvgdUnderIsa(string isa, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = Reference.RepoRoot,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "svgd.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["ONEDNN_MAX_CPU_ISA"] = isa;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, stderr + stdout.Result);
    }

    [Fact]
    public void BundledDecodingUnderAnotherOneDnnIsaGivesTheSamePixels()
    {
        string outFile = Path.Combine(Reference.TempDir(), "sse41.safetensors");
        RunSvgdUnderIsa("SSE41", "decode", "--autoencoder", BundledAutoencoder,
            "--latents", Path.Combine(Fp64Dir, "latent.safetensors"), "--batch-size", "40", "--precision", "fp32", "--out", outFile);
        var expected = SafeTensors.Load(Path.Combine(Fp64Dir, "images.safetensors"))["images"];
        Reference.Close(expected, SafeTensors.Load(outFile)["images"], 1e-4, "bundled decode under ONEDNN_MAX_CPU_ISA=SSE41 vs float64");
    }

    [Fact]
    public void ReleasedConfigDecodingUnderAnotherOneDnnIsaMatchesTheReference()
    {
        // The released architecture's decoder (72 latent channels here: off the vector width too).
        string outFile = Path.Combine(Reference.TempDir(), "sse41.safetensors");
        RunSvgdUnderIsa("SSE41", "decode", "--autoencoder", Reference.File_("svg_autoencoder.ckpt"),
            "--config", Reference.File_("svg_autoencoder.json"), "--latents", Reference.File_("svg_autoencoder.io.safetensors"),
            "--key", "latent", "--precision", "fp32", "--out", outFile);
        Reference.Close(Reference.Io("svg_autoencoder")["reconstruction"], SafeTensors.Load(outFile)["images"], 1e-4,
            "released-config decode under ONEDNN_MAX_CPU_ISA=SSE41 vs PyTorch");
    }

    [Fact]
    public void DoctorReportsEveryCheckAsJson()
    {
        var (code, stdout, stderr) = Reference.RunCli("doctor", "--json");
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.True(root.GetProperty("verdict").GetProperty("all_passed").GetBoolean());
        Assert.True(root.GetProperty("verdict").GetProperty("results").GetArrayLength() > 100);
        Assert.True(root.GetProperty("native_conv").GetArrayLength() > 40);
        Assert.True(root.GetProperty("matmul_fp32_gflops").GetDouble() > 0);
        Assert.True(root.GetProperty("isa_flags").TryGetProperty("avx512_bf16", out _));
        Assert.False(string.IsNullOrEmpty(root.GetProperty("lib_torch").GetString()));
    }
}

/// <summary>How the guard chooses when a check fails, with faults injected into the check results.</summary>
public class KernelGuardSelectionTests
{
    static List<KernelCheckResult> Results(params (string Kernel, double Error)[] checks) =>
        checks.Select(c => new KernelCheckResult(c.Kernel, "in 392, out 32, 3x3, stride 1", "fp32", c.Error, KernelCheck.Fp32Tolerance)).ToList();

    [Fact]
    public void AFaultOnThePaddedPathSwitchesOneDnnOffWithOneWarning()
    {
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            var tried = new List<ConvPath>();
            var v = KernelGuard.Evaluate(null, useCache: false, path =>
            {
                tried.Add(path);
                return path == ConvPath.PaddedChannels ? Results(("conv2d", 0.6), ("linear", 1e-7)) : Results(("conv2d", 1e-6), ("linear", 1e-7));
            });
            Assert.Equal(new[] { ConvPath.PaddedChannels, ConvPath.OneDnnOff }, tried);
            Assert.Equal(ConvPath.OneDnnOff, v.Path);
            Assert.True(v.AllPassed);
            Assert.False(LibTorchNative.OneDnnEnabled);
            string line = KernelGuard.WarningFor(v)!;
            Assert.DoesNotContain('\n', line);
            Assert.Contains("conv2d fp32 (in 392", line);
            Assert.Contains("oneDNN off", line);
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
    }

    [Fact]
    public void APassingPaddedPathIsKeptSilently()
    {
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            var v = KernelGuard.Evaluate(null, useCache: false, _ => Results(("conv2d", 1e-6)));
            Assert.Equal(ConvPath.PaddedChannels, v.Path);
            Assert.True(LibTorchNative.OneDnnEnabled);
            Assert.Null(KernelGuard.WarningFor(v));
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
    }

    [Fact]
    public void AFaultOnEveryPathIsReportedNotHidden()
    {
        bool was = LibTorchNative.OneDnnEnabled;
        try
        {
            var v = KernelGuard.Evaluate(null, useCache: false, path => path == ConvPath.PaddedChannels
                ? Results(("conv2d", 0.6), ("linear", 0.3))
                : Results(("conv2d", 1e-6), ("linear", double.NaN)));
            Assert.False(v.AllPassed);
            Assert.Equal(ConvPath.OneDnnOff, v.Path); // fewer failures
            Assert.Contains("linear fp32", KernelGuard.WarningFor(v));
            Assert.Contains("NaN", KernelGuard.WarningFor(v));
            Assert.Contains("not trustworthy", KernelGuard.WarningFor(v));
        }
        finally { LibTorchNative.OneDnnEnabled = was; }
    }
}

public class PrecisionTests
{
    [Fact]
    public void AutoIsBf16OnlyWhereBf16IsNative()
    {
        var expected = CpuInfo.Current.NativeBf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        Assert.Equal(expected, Precision.Resolve("auto"));
        Assert.Equal(ScalarType.Float32, Precision.Resolve("FP32"));
        Assert.Equal(ScalarType.Float64, Precision.Resolve("fp64"));
        var e = Assert.Throws<SvgdException>(() => Precision.Resolve("fp64", allowFp64: false));
        Assert.Contains("--precision", e.Message);
        Assert.Throws<SvgdException>(() => Precision.Resolve("half"));
    }
}
