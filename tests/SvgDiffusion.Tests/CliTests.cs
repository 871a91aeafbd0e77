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
    static (int Code, string Out, string Err) Run(params string[] args) => Reference.RunCli(args);

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
            "--key", "image", "--out", outFile, "--layers", "2", "--precision", "fp32");
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

    [Fact]
    public void AutoencoderCommandsRoundTrip()
    {
        string dir = Reference.TempDir();
        string ae = Reference.File_("svg_autoencoder.ckpt"), cfg = Reference.File_("svg_autoencoder.json");
        string images = AutoencoderTrainingTests.FashionMnist;
        var enc = Run("encode", "--autoencoder", ae, "--config", cfg, "--images", images, "--out", Path.Combine(dir, "z.safetensors"), "--batch-size", "40");
        Assert.True(enc.Code == 0, enc.Err + enc.Out);
        var z = SafeTensors.Load(Path.Combine(dir, "z.safetensors"))["latent"];
        Assert.Equal(new long[] { 40, 72, 4, 4 }, z.shape);
        var dec = Run("decode", "--autoencoder", ae, "--config", cfg, "--latents", Path.Combine(dir, "z.safetensors"), "--out", Path.Combine(dir, "x.safetensors"));
        Assert.True(dec.Code == 0, dec.Err + dec.Out);
        Assert.Equal(new long[] { 40, 3, 64, 64 }, SafeTensors.Load(Path.Combine(dir, "x.safetensors"))["images"].shape);
        var rec = Run("reconstruct", "--autoencoder", ae, "--config", cfg, "--images", images, "--out", Path.Combine(dir, "rec"));
        Assert.True(rec.Code == 0, rec.Err + rec.Out);
        Assert.True(File.Exists(Path.Combine(dir, "rec", "grid.png")));
        Assert.Contains("mean_psnr", File.ReadAllText(Path.Combine(dir, "rec", "metrics.json")));
        var cal = Run("calibrate", "--autoencoder", ae, "--config", cfg, "--images", images, "--out", Path.Combine(dir, "cal.safetensors"));
        Assert.True(cal.Code == 0, cal.Err + cal.Out);
        // Calibrated: 'stored' by default, so one image encodes the same alone as in a batch.
        var one = Run("encode", "--autoencoder", Path.Combine(dir, "cal.safetensors"), "--images", Path.Combine(images, "bag"), "--out", Path.Combine(dir, "one.safetensors"), "--batch-size", "1");
        var four = Run("encode", "--autoencoder", Path.Combine(dir, "cal.safetensors"), "--images", Path.Combine(images, "bag"), "--out", Path.Combine(dir, "four.safetensors"), "--batch-size", "4");
        Assert.True(one.Code == 0 && four.Code == 0, one.Err + four.Err);
        Reference.Close(SafeTensors.Load(Path.Combine(dir, "four.safetensors"))["latent"], SafeTensors.Load(Path.Combine(dir, "one.safetensors"))["latent"], 1e-5, "stored alignment");
        var stats = Run("latent-stats", "--autoencoder", Path.Combine(dir, "cal.safetensors"), "--images", images, "--out", Path.Combine(dir, "stats.safetensors"));
        Assert.True(stats.Code == 0, stats.Err + stats.Out);
        Assert.Equal(new long[] { 1, 1, 72 }, SafeTensors.Load(Path.Combine(dir, "stats.safetensors"))["dinov3_sp_mean"].shape);
    }

    [Fact]
    public void AutoencoderErrorsAreOneLine()
    {
        string dir = Reference.TempDir();
        string ae = Reference.File_("svg_autoencoder.ckpt"), cfg = Reference.File_("svg_autoencoder.json");
        string bad = Path.Combine(dir, "imgs");
        Directory.CreateDirectory(bad);
        File.Copy(Path.Combine(AutoencoderTrainingTests.FashionMnist, "bag", Directory.GetFiles(Path.Combine(AutoencoderTrainingTests.FashionMnist, "bag"))[0]), Path.Combine(bad, "a.png"));
        File.WriteAllBytes(Path.Combine(bad, "b.png"), new byte[] { 0x89, 0x50, 0x4E, 0x47, 1, 2, 3 });
        var wrongLatent = Path.Combine(dir, "w.safetensors");
        SafeTensors.Save(wrongLatent, new Dictionary<string, torch.Tensor> { ["latent"] = torch.zeros(2, 71, 4, 4) });
        var cases = new (string[] Args, string Expect)[]
        {
            (new[] { "encode", "--autoencoder", ae, "--config", cfg, "--images", bad, "--out", Path.Combine(dir, "o.safetensors") }, "b.png"),
            (new[] { "decode", "--autoencoder", ae, "--config", cfg, "--latents", wrongLatent, "--out", Path.Combine(dir, "d") }, "[2, 71, 4, 4]"),
            (new[] { "reconstruct", "--autoencoder", Reference.File_("svg_dit.pt"), "--images", bad, "--out", Path.Combine(dir, "r") }, "not an SVG autoencoder"),
            (new[] { "encode", "--autoencoder", Reference.File_("dinov3_mlp.pth"), "--images", bad, "--out", Path.Combine(dir, "o.safetensors") }, "looks like a DINOv3"),
        };
        foreach (var (args, expect) in cases)
        {
            var (code, _, err) = Run(args);
            Assert.Equal(1, code);
            Assert.Single(err.Trim().Split('\n'));
            Assert.Contains(expect, err);
        }
        Assert.False(File.Exists(Path.Combine(dir, "o.safetensors")));
    }

    [Theory]
    [InlineData("euler5_cfg1.5_constant", "euler", 5, "1.5", "constant", "0.15")]
    [InlineData("heun3_cfg4_constant", "heun", 3, "4", "constant", "0.15")]
    [InlineData("euler4_cfg1.5_cfgstar", "euler", 4, "1.5", "cfg_star-1-0", "0.15")]
    public void SampleReproducesTheReferenceSampler(string name, string sampler, int steps, string cfg, string mode, string shift)
    {
        string outFile = Path.Combine(Reference.TempDir(), "s.safetensors");
        var (code, stdout, stderr) = Run("sample", "--model", Reference.File_("svg_dit.pt"), "--dit-config", Reference.File_("svg_dit.json"),
            "--init-noise", Reference.File_("svg_dit.io.safetensors"), "--key", "sample.z", "--labels", "3,5",
            "--sampler", sampler, "--steps", steps.ToString(), "--cfg", cfg, "--guidance", mode, "--shift", shift,
            "--no-stats", "--no-decode", "--latent-out", outFile, "--precision", "fp32");
        Assert.True(code == 0, stderr + stdout);
        var latent = SafeTensors.Load(outFile)["latent"];                 // [B, C, h, w]
        var tokens = latent.flatten(2).transpose(1, 2);
        Reference.Close(Reference.Io("svg_dit")[$"sample.{name}"], tokens, 1e-4, name);
    }

    [Fact]
    public void SampleIsSeededPerImage()
    {
        string dir = Reference.TempDir();
        string[] Args(string file, string batch) => new[] { "sample", "--model", Reference.File_("svg_dit.pt"), "--dit-config", Reference.File_("svg_dit.json"),
            "--classes", "1,2", "--n", "3", "--steps", "2", "--seed", "11", "--no-stats", "--no-decode", "--latent-out", Path.Combine(dir, file), "--batch-size", batch };
        Assert.Equal(0, Run(Args("a.safetensors", "6")).Code);
        Assert.Equal(0, Run(Args("b.safetensors", "4")).Code);
        var a = SafeTensors.Load(Path.Combine(dir, "a.safetensors"));
        var b = SafeTensors.Load(Path.Combine(dir, "b.safetensors"));
        Assert.True(Reference.Same(a["latent"], b["latent"]), "same seed, different batch size, same samples");
        Assert.Equal(new long[] { 1, 1, 1, 2, 2, 2 }, a["labels"].data<long>().ToArray());
    }

    /// <summary>A random 72-channel DiT that fits the reference autoencoder's 4x4 latents.</summary>
    internal static string TinyDiT(string dir)
    {
        torch.manual_seed(3);
        using var dit = new Models.Diffusion.DiT(new Models.Diffusion.DiTConfig { InputSize = 4, InChannels = 72, HiddenSize = 64, Depth = 2, NumHeads = 4, NumClasses = 10 });
        string path = Path.Combine(dir, "dit.safetensors");
        Models.Diffusion.DiTCheckpoint.Save(dit, path);
        return path;
    }

    [Fact]
    public void SampleEvalIsResumableAndFdIsLabelled()
    {
        string dir = Reference.TempDir();
        string dit = TinyDiT(dir);
        string[] Args(string outFile) => new[] { "sample-eval", "--model", dit, "--no-stats", "--autoencoder", Reference.File_("svg_autoencoder.ckpt"),
            "--config", Reference.File_("svg_autoencoder.json"), "--feature-network", "dinov3", "--feature-encoder", Reference.File_("dinov3_swiglu.pth"),
            "--feature-size", "64", "--n", "12", "--shard-size", "5", "--batch-size", "3", "--steps", "2", "--out", outFile };
        var first = Run(Args(Path.Combine(dir, "a.npz")));
        Assert.True(first.Code == 0, first.Err + first.Out);
        Assert.Equal(3, Directory.GetFiles(Path.Combine(dir, "a.npz.shards")).Length);
        File.Delete(Path.Combine(dir, "a.npz.shards", "shard-00001.safetensors"));
        var again = Run(Args(Path.Combine(dir, "a.npz")));
        Assert.True(again.Code == 0, again.Err + again.Out);
        Assert.Contains("2 of 3 shards already done", again.Out);
        var fresh = Run(Args(Path.Combine(dir, "b.npz")));
        Assert.True(fresh.Code == 0, fresh.Err);
        var a = Evaluation.Npz.Load(Path.Combine(dir, "a.npz"));
        var b = Evaluation.Npz.Load(Path.Combine(dir, "b.npz"));
        Reference.Close(b["mu"], a["mu"], 1e-9, "resumed mu");
        Reference.Close(b["sigma"], a["sigma"], 1e-9, "resumed sigma");

        var fd = Run("fid", Path.Combine(dir, "a.npz"), AutoencoderTrainingTests.FashionMnist, "--feature-network", "dinov3",
            "--feature-encoder", Reference.File_("dinov3_swiglu.pth"), "--feature-size", "64");
        Assert.True(fd.Code == 0, fd.Err);
        Assert.Contains("FD-dinov3", fd.Out);
        Assert.DoesNotContain("FID", fd.Out);
        var noNet = Run("fid", AutoencoderTrainingTests.FashionMnist, AutoencoderTrainingTests.FashionMnist);
        Assert.Equal(1, noNet.Code);
        Assert.Contains("--inception", noNet.Err);
    }

    [Fact]
    public void CacheTrainResumeAndSampleFromTheCommandLine()
    {
        string dir = Reference.TempDir();
        string ae = Reference.File_("svg_autoencoder.ckpt"), cfg = Reference.File_("svg_autoencoder.json");
        string cache = Path.Combine(dir, "cache"), run = Path.Combine(dir, "run");
        var c = Run("cache-latents", "--autoencoder", ae, "--config", cfg, "--images", AutoencoderTrainingTests.FashionMnist, "--out", cache, "--flip", "--shard-size", "32");
        Assert.True(c.Code == 0, c.Err + c.Out);
        Assert.Contains("80 latents", c.Out);
        var t = Run("train", "--latents", cache, "--out", run, "--preset", "svg-tiny", "--steps", "4", "--batch-size", "4", "--checkpoint-every", "2",
            "--sample-every", "0", "--autoencoder", ae, "--autoencoder-config", cfg, "--sample-steps", "2");
        Assert.True(t.Code == 0, t.Err + t.Out);
        Assert.True(File.Exists(Path.Combine(run, "samples", "step-000004.png")));
        var r = Run("train", "--latents", cache, "--out", run, "--resume", Path.Combine(run, "last.safetensors"), "--steps", "6");
        Assert.True(r.Code == 0, r.Err + r.Out);
        Assert.Contains("resumed", r.Out);
        Assert.Contains("step 6", r.Out);
        var s = Run("sample", "--model", Path.Combine(run, "last.safetensors"), "--autoencoder", ae, "--config", cfg, "--classes", "0,9", "--n", "2",
            "--steps", "3", "--out", Path.Combine(dir, "grid.png"), "--out-dir", Path.Combine(dir, "each"));
        Assert.True(s.Code == 0, s.Err + s.Out);
        Assert.True(File.Exists(Path.Combine(dir, "grid.png")));
        Assert.Equal(4, Directory.GetFiles(Path.Combine(dir, "each"), "*.png").Length);

        // Export: EMA weights, statistics and class names in a model folder that samples on its own.
        string ae2 = Path.Combine(dir, "ae.safetensors");
        Models.Autoencoder.SvgAutoencoderCheckpoint.Save(Models.Autoencoder.SvgAutoencoderCheckpoint.Load(ae, Config.ConfigJson.Load<Models.Autoencoder.SvgAutoencoderConfig>(cfg)), ae2);
        var e = Run("export", "--autoencoder", ae2, "--dit", Path.Combine(run, "last.safetensors"), "--out", Path.Combine(dir, "model"));
        Assert.True(e.Code == 0, e.Err + e.Out);
        Assert.Contains("bag", SafeTensors.ReadHeader(Path.Combine(dir, "model", "dit.safetensors")).Metadata["svgd.class_names"]);
        var s2 = Run("sample", "--model", Path.Combine(dir, "model", "dit.safetensors"), "--autoencoder", Path.Combine(dir, "model", "autoencoder.safetensors"),
            "--stats", Path.Combine(dir, "model", "latent-stats.safetensors"), "--classes", "0,8", "--n", "2", "--steps", "2", "--out", Path.Combine(dir, "grid2.png"));
        Assert.True(s2.Code == 0, s2.Err + s2.Out);
    }

    [Fact]
    public void TrainEncodesOnlineWithoutACache()
    {
        string dir = Reference.TempDir();
        string ae = Reference.File_("svg_autoencoder.ckpt"), cfg = Reference.File_("svg_autoencoder.json");
        var st = Run("latent-stats", "--autoencoder", ae, "--config", cfg, "--images", AutoencoderTrainingTests.FashionMnist, "--out", Path.Combine(dir, "stats.safetensors"));
        Assert.True(st.Code == 0, st.Err);
        var t = Run("train", "--images", AutoencoderTrainingTests.FashionMnist, "--autoencoder", ae, "--autoencoder-config", cfg, "--stats", Path.Combine(dir, "stats.safetensors"),
            "--out", Path.Combine(dir, "run"), "--preset", "svg-tiny", "--steps", "3", "--batch-size", "4", "--sample-every", "0", "--sample-steps", "2");
        Assert.True(t.Code == 0, t.Err + t.Out);
        Assert.Contains("online-encoded", t.Out);
        var bad = Run("train", "--images", AutoencoderTrainingTests.FashionMnist, "--autoencoder", ae, "--out", Path.Combine(dir, "run2"), "--preset", "svg-tiny");
        Assert.Equal(1, bad.Code);
        Assert.Contains("--stats", bad.Err);
    }
}
