using Spectre.Console;
using Spectre.Console.Testing;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Cli;
using SvgDiffusion.Data;
using TorchSharp;
using Xunit;

namespace SvgDiffusion.Tests;

public class CliTests
{
    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var console = new TestConsole();
        console.Profile.Width = 200;
        var err = new StringWriter();
        int code = SvgdCli.Run(args, console, err);
        return (code, console.Output, err.ToString());
    }

    [Fact]
    public void FeaturesFromImagesWritesEveryOutput()
    {
        string dir = Reference.TempDir();
        string imgs = Path.Combine(dir, "imgs");
        Directory.CreateDirectory(Path.Combine(imgs, "sub"));
        ImageFiles.SavePng(torch.rand(3, 40, 50), Path.Combine(imgs, "a.png"), (0, 1));
        ImageFiles.SavePng(torch.rand(3, 64, 64), Path.Combine(imgs, "sub", "b.png"), (0, 1));
        ImageFiles.SavePng(torch.rand(3, 30, 30), Path.Combine(imgs, "c.png"), (0, 1));
        string outFile = Path.Combine(dir, "f.safetensors");
        var (code, stdout, stderr) = Run("features", "--encoder", Reference.File_("dinov3_swiglu.pth"), "--images", imgs,
            "--out", outFile, "--layers", "0,-1", "--batch-size", "2", "--size", "64x48");
        Assert.True(code == 0, stderr + stdout);
        var f = SafeTensors.Load(outFile);
        Assert.Equal(new long[] { 3, 64 }, f["cls"].shape);
        Assert.Equal(new long[] { 3, 4, 64 }, f["registers"].shape);
        Assert.Equal(new long[] { 3, 12, 64 }, f["patch"].shape);
        Assert.Equal(new long[] { 3, 64, 4, 3 }, f["layer0"].shape);
        Assert.Equal(new long[] { 3, 64, 4, 3 }, f["layer2"].shape);
        Assert.Contains("sub/b.png", SafeTensors.ReadHeader(outFile).Metadata["svgd.sources"]);
    }

    [Fact]
    public void FeaturesFromATensorMatchTheReference()
    {
        string outFile = Path.Combine(Reference.TempDir(), "f.safetensors");
        var (code, stdout, stderr) = Run("features", "--encoder", Reference.File_("dinov3_mlp.hf.safetensors"),
            "--config", Reference.File_("dinov3_mlp.json"), "--tensor", Reference.File_("dinov3_mlp.io.safetensors"),
            "--key", "image", "--out", outFile, "--layers", "2");
        Assert.True(code == 0, stderr + stdout);
        var f = SafeTensors.Load(outFile);
        var io = Reference.Io("dinov3_mlp");
        Reference.Close(io["hf.patch"], f["patch"], 1e-5, "patch");
        Reference.Close(io["hf.layer2"], f["layer2"], 1e-5, "layer2");
    }

    [Fact]
    public void InspectListsTensorsAndCounts()
    {
        var (code, stdout, _) = Run("inspect", Reference.File_("svg_dit.pt"));
        Assert.Equal(0, code);
        Assert.Contains("ema", stdout);
        Assert.Contains("pos_embed", stdout);
        Assert.Contains("[1, 256, 64]", stdout);
        Assert.Contains("40 tensors", stdout);
    }

    [Fact]
    public void UserErrorsAreOneLineWithExitCodeOne()
    {
        string outFile = Path.Combine(Reference.TempDir(), "never.safetensors");
        var cases = new[]
        {
            new[] { "inspect", "/nonexistent/file.pth" },
            new[] { "features", "--encoder", Reference.File_("svg_dit.pt"), "--images", ".", "--out", outFile },
            new[] { "features", "--encoder", Reference.File_("dinov3_mlp.pth"), "--out", outFile },
            new[] { "features", "--encoder", Reference.File_("dinov3_mlp.pth"), "--tensor", Reference.File_("dinov3_mlp.io.safetensors"), "--key", "hf.cls", "--out", outFile },
            new[] { "features", "--encoder", Reference.File_("dinov3_mlp.pth"), "--preset", "vit-giant", "--images", ".", "--out", outFile },
        };
        foreach (var args in cases)
        {
            var (code, _, stderr) = Run(args);
            Assert.Equal(1, code);
            Assert.StartsWith("error: ", stderr);
            Assert.Single(stderr.Trim().Split('\n'));
        }
        Assert.False(File.Exists(outFile));
    }
}
