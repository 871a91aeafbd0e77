using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Common;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>bf16 mixed-precision training: fp32 master weights and optimiser state, bf16 compute, fp32 checkpoints.</summary>
public class MixedPrecisionTests(FashionLatents data, ITestOutputHelper log) : IClassFixture<FashionLatents>
{
    [Fact]
    public void AutocastConvolutionComputesInBf16AndKeepsFp32WeightsAndGradients()
    {
        using var scope = torch.NewDisposeScope();
        var conv = new ConvLayer(20, 24, 3, padding: 1);
        var x = torch.randn(2, 20, 8, 8);
        var y32 = conv.forward(x);
        Tensor y16;
        using (Autocast.Enter(ScalarType.BFloat16))
        {
            y16 = conv.forward(x);
            Assert.Equal(ScalarType.BFloat16, Autocast.Current);
        }
        Assert.Null(Autocast.Current);
        Assert.Equal(ScalarType.Float32, y16.dtype);
        Assert.Equal(ScalarType.Float32, conv.Weight.dtype);
        double rel = (y16 - y32).abs().max().item<float>() / y32.abs().max().item<float>();
        Assert.True(rel > 0 && rel < 2e-2, $"bf16 rounding only: relative difference {rel:g3}");
        y16.sum().backward();
        Assert.Equal(ScalarType.Float32, conv.Weight.grad!.dtype);
        Assert.True(conv.Weight.grad.abs().sum().item<float>() > 0);
    }

    [Fact]
    public void Bf16DiTTrainingKeepsFp32MastersAndFollowsFp32()
    {
        torch.manual_seed(5);
        using var init = new DiT(DiTTrainingTests.TinyDiT);
        var cfg = new DiTTrainingConfig { BatchSize = 16, LearningRate = 1e-3, EmaDecay = 0.9, Seed = 3, Steps = 40 };
        using var fp32 = new DiTTrainer(DiTTrainingTests.CopyOf(init), data.Cache, cfg);
        using var bf16 = new DiTTrainer(DiTTrainingTests.CopyOf(init), data.Cache, cfg) { ComputePrecision = ScalarType.BFloat16 };
        Assert.Equal(ScalarType.BFloat16, bf16.ComputePrecision);
        var all = Enumerable.Range(0, data.Cache.Count).ToList();
        double before = fp32.EvalLoss(all, seed: 7);

        // One step from the same weights on the same batch: the same loss up to bf16 rounding.
        var s32 = fp32.TrainStep();
        var s16 = bf16.TrainStep();
        Assert.True(Math.Abs(s16.Loss - s32.Loss) < 0.02 * s32.Loss, $"first-step loss {s32.Loss:F5} (fp32) vs {s16.Loss:F5} (bf16)");
        Assert.True(Math.Abs(s16.GradNorm - s32.GradNorm) < 0.05 * s32.GradNorm, $"first-step gradient norm {s32.GradNorm:F5} vs {s16.GradNorm:F5}");

        fp32.Train();
        bf16.Train();
        double after32 = fp32.EvalLoss(all, seed: 7), after16 = bf16.EvalLoss(all, seed: 7);
        log.WriteLine($"eval loss {before:F4} -> fp32 {after32:F4}, bf16 {after16:F4}");
        Assert.True(after16 < 0.8 * before, $"bf16 training should learn: {before:F4} -> {after16:F4}");
        Assert.True(Math.Abs(after16 - after32) < 0.1 * after32, $"bf16 and fp32 runs should end close: {after32:F4} vs {after16:F4}");
        foreach (var (name, p) in bf16.Model.named_parameters())
            Assert.True(p.dtype == ScalarType.Float32, $"master weight {name} is {p.dtype}");
        foreach (var (name, p) in bf16.Ema.named_parameters())
            Assert.True(p.dtype == ScalarType.Float32, $"EMA weight {name} is {p.dtype}");
        // The master weights moved away from the bf16 grid: updates smaller than a bf16 ulp are kept.
        var w = bf16.Model.named_parameters().First(p => p.name.EndsWith("qkv.weight")).parameter;
        Assert.False(Reference.Same(w, w.to(ScalarType.BFloat16).to(ScalarType.Float32)), "master weights should not be bf16-rounded");

        string path = Path.Combine(Reference.TempDir(), "bf16.safetensors");
        bf16.Save(path);
        Assert.All(SafeTensors.Load(path).Where(kv => kv.Key.StartsWith("model.")), kv => Assert.Equal(ScalarType.Float32, kv.Value.dtype));
        // A bf16 run resumes in fp32 (and back): precision is not part of the run.
        using var resumed = DiTTrainer.Resume(path, data.Cache, 42);
        Assert.Equal(ScalarType.Float32, resumed.ComputePrecision);
        resumed.ComputePrecision = ScalarType.BFloat16;
        Assert.True(double.IsFinite(resumed.TrainStep().Loss));
        fp32.Model.Dispose();
        bf16.Model.Dispose();
        resumed.Model.Dispose();
    }

    [Fact]
    public void Bf16AutoencoderTrainingFollowsFp32()
    {
        var images = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        var cfg = new AutoencoderTrainingConfig { BatchSize = 8, LearningRate = 1e-3, DiscStart = 1000, Seed = 3 };
        using var m32 = AutoencoderTrainingTests.TinyAutoencoder(1);
        using var m16 = AutoencoderTrainingTests.TinyAutoencoder(1);
        StateDictLoader.Load(m16, m32.state_dict(), "copy");
        using var t32 = new AutoencoderTrainer(m32, images, cfg);
        using var t16 = new AutoencoderTrainer(m16, images, cfg) { ComputePrecision = ScalarType.BFloat16 };
        var idx = Enumerable.Range(0, images.Count).ToList();
        double before = t32.EvalL1(idx);
        Assert.Equal(before, t16.EvalL1(idx), 6);
        var a = t32.TrainStep();
        var b = t16.TrainStep();
        Assert.True(Math.Abs(a.L1 - b.L1) < 0.02 * a.L1, $"first-step L1 {a.L1:F5} (fp32) vs {b.L1:F5} (bf16)");
        for (int i = 0; i < 11; i++) { t32.TrainStep(); t16.TrainStep(); }
        double after32 = t32.EvalL1(idx), after16 = t16.EvalL1(idx);
        log.WriteLine($"eval L1 {before:F4} -> fp32 {after32:F4}, bf16 {after16:F4}");
        Assert.True(after16 < 0.9 * before, $"bf16 training should learn: {before:F4} -> {after16:F4}");
        Assert.True(Math.Abs(after16 - after32) < 0.1 * after32, $"bf16 and fp32 runs should end close: {after32:F4} vs {after16:F4}");
        Assert.All(m16.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
    }

    [Fact]
    public void TrainCommandTakesPrecisionAndLogsEvalLoss()
    {
        string run = Path.Combine(Reference.TempDir(), "run");
        var ok = Reference.RunCli("train", "--latents", data.Directory, "--out", run, "--preset", "svg-xs", "--steps", "3", "--batch-size", "8",
            "--precision", "bf16", "--eval-every", "2", "--eval-latents", data.Directory, "--eval-size", "16", "--sample-every", "0");
        Assert.True(ok.Code == 0, ok.Err + ok.Out);
        Assert.Contains("bf16 mixed precision", ok.Out);
        var rows = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        Assert.Equal(3, rows.Length);
        // Every --eval-every steps and at the last step.
        Assert.Equal(new[] { false, true, true }, rows.Select(r => r.Contains("\"eval_loss\":")));
        Assert.True(File.Exists(Path.Combine(run, "eval-loss.png")));

        foreach (var (args, expected) in new[]
        {
            (new[] { "--precision", "fp64" }, "--precision"),
            (new[] { "--eval-size", "0" }, "--eval-size"),
            (new[] { "--eval-every", "-1" }, "--eval-every"),
            (new[] { "--eval-latents", "/nonexistent/cache" }, "--eval-latents"),
        })
        {
            var bad = Reference.RunCli(new[] { "train", "--latents", data.Directory, "--out", Path.Combine(Reference.TempDir(), "bad"), "--preset", "svg-xs", "--steps", "1" }.Concat(args).ToArray());
            Assert.Equal(1, bad.Code);
            Assert.StartsWith("error: " + expected, bad.Err.Trim());
            Assert.Single(bad.Err.Trim().Split('\n'));
        }
    }
}
