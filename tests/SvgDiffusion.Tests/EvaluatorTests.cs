using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Models.Evaluator;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The independent evaluator (committed weights, trainer) and the metrics computed from it.</summary>
public class EvaluatorTests(ITestOutputHelper log)
{
    static string Committed => Path.Combine(Reference.RepoRoot, "models", "evaluator", "fashion-mnist.safetensors");

    [Fact]
    public void CommittedEvaluatorClassifiesHeldOutImages()
    {
        // The 40 committed images are Fashion-MNIST test images the evaluator never trained on.
        var (model, names, top1) = EvaluatorCheckpoint.Load(Committed);
        using var _ = model;
        var folder = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        Assert.Equal(folder.ClassNames, names);
        Assert.True(top1 >= 0.93, $"the header records the 10k test top-1 the model card claims: {top1}");
        var (x, y) = EvaluatorTrainer.Preload(folder, model.Config.ImageSize);
        var (acc, loss) = EvaluatorTrainer.Evaluate(model, x, y);
        log.WriteLine($"top-1 {acc:P1} on {folder.Count} images (loss {loss:F3})");
        Assert.True(acc >= 0.8, $"chance is 10%; the evaluator should be far above it, got {acc:P1}");
        // RGB input is judged by its luminance: the same picture in colour gets the same logits.
        using var rgb = folder.CenterBatch(Enumerable.Range(0, 8), 32);
        using var grey = rgb.mean(new long[] { 1 }, keepdim: true);
        using var noGrad = torch.inference_mode();
        Assert.True(Reference.MaxAbs(model.Forward(rgb), model.Forward(grey)) < 1e-5);
    }

    [Fact]
    public void TrainingIsDeterministicAndResumesExactly()
    {
        var folder = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        var (x, y) = EvaluatorTrainer.Preload(folder, 32);
        var cfg = new EvaluatorTrainingConfig { Epochs = 2, BatchSize = 8, LearningRate = 3e-3, WarmupEpochs = 0, Seed = 4 };
        var small = new EvaluatorConfig { Channels = new[] { 8, 16, 32 } };
        EvaluatorTrainer Make() { torch.manual_seed(9); return new EvaluatorTrainer(new EvaluatorNet(small), x, y, cfg); }

        using var a = Make();
        using var b = Make();
        var la = Enumerable.Range(0, a.TotalSteps).Select(_ => a.TrainStep().Loss).ToList();
        var lb = Enumerable.Range(0, b.TotalSteps).Select(_ => b.TrainStep().Loss).ToList();
        Assert.Equal(la, lb);
        Assert.True(la[^1] < la[0], $"loss should fall: {la[0]:F3} -> {la[^1]:F3}");

        string path = Path.Combine(Reference.TempDir(), "eval.safetensors");
        using (var c = Make())
        {
            for (int i = 0; i < 3; i++) c.TrainStep();
            c.Save(path);
        }
        using var resumed = EvaluatorTrainer.Resume(path, x, y);
        while (resumed.Step < resumed.TotalSteps) resumed.TrainStep();
        var wa = a.Model.state_dict();
        foreach (var (k, t) in resumed.Model.state_dict()) Assert.True(Reference.Same(wa[k], t), $"{k} differs after resume");
    }

    [Fact]
    public void PrecisionAndRecallFollowTheirDefinitions()
    {
        using var scope = torch.NewDisposeScope();
        var real = torch.randn(200, 5, generator: new Generator(1));
        var same = PrecisionRecall.Compute(real, real.clone(), k: 3);
        Assert.Equal(1.0, same.Precision);
        Assert.Equal(1.0, same.Recall);
        var far = PrecisionRecall.Compute(real, real + 100, k: 3);
        Assert.Equal(0.0, far.Precision);
        Assert.Equal(0.0, far.Recall);
        // Generated points all near one real point (mode collapse): precise, but covering little of the data.
        var collapsed = real[0].unsqueeze(0) + 0.001 * torch.randn(200, 5, generator: new Generator(2));
        var pr = PrecisionRecall.Compute(real, collapsed, k: 3);
        Assert.Equal(1.0, pr.Precision);
        Assert.True(pr.Recall < 0.1, $"recall of a collapsed set should be small, got {pr.Recall}");
        // Hand-checked 1-D case, k = 1: real {0, 1, 2} (radii 1, 1, 1), generated {0.5, 5, 6} (radii 4.5, 1, 1).
        var r1 = torch.tensor(new float[] { 0, 1, 2 }).view(3, 1);
        var f1 = torch.tensor(new float[] { 0.5f, 5, 6 }).view(3, 1);
        var h = PrecisionRecall.Compute(r1, f1, k: 1);
        Assert.Equal(1.0 / 3, h.Precision, 9);   // only 0.5 lies within a real ball
        Assert.Equal(1.0, h.Recall, 9);          // 0, 1 and 2 all lie within 0.5's ball of radius 4.5
    }
}
