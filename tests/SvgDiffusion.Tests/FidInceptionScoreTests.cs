using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class FidInceptionScoreTests
{
    [Fact]
    public void ConfidentAndDiverseGivesTheClassCount()
    {
        using var scope = torch.NewDisposeScope();
        // 40 samples, 2 splits; each split holds every one of 10 classes twice, predicted with certainty.
        var labels = torch.arange(40) % 10;
        var logits = torch.nn.functional.one_hot(labels, 1008).to(ScalarType.Float32) * 60;
        var r = InceptionScore.FromLogits(logits, splits: 2);
        Assert.Equal(2, r.SplitScores.Count);
        Assert.True(Math.Abs(r.Mean - 10) < 1e-6, $"{r.Mean}");
        Assert.True(r.Std < 1e-9);
    }

    [Fact]
    public void UniformPredictionsGiveOne()
    {
        using var logits = torch.zeros(30, 1008);
        var r = InceptionScore.FromLogits(logits);
        Assert.Equal(10, r.SplitScores.Count);
        Assert.True(Math.Abs(r.Mean - 1) < 1e-12);
    }

    [Fact]
    public void SplitsFollowTheReferenceCode()
    {
        using var scope = torch.NewDisposeScope();
        // Hand computation: split 0 = one confident class (score 1), split 1 = two classes half/half (score 2).
        var probs = torch.tensor(new double[,] { { 1, 0, 0 }, { 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 } });
        var r = InceptionScore.FromProbabilities(probs, splits: 2);
        Assert.Equal(1.0, r.SplitScores[0], 12);
        Assert.Equal(2.0, r.SplitScores[1], 12);
        Assert.Equal(1.5, r.Mean, 12);
        Assert.Equal(0.5, r.Std, 12);
        Assert.Throws<SvgdException>(() => InceptionScore.FromLogits(torch.zeros(5, 10), splits: 10));
    }
}
