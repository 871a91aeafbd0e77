using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>How good a model's samples are, judged by the evaluator no model trains with; FD-resnet18 only as a secondary column.</summary>
public sealed record SampleQualityResult(
    int Count, double FdEvaluator, double ClassAccuracy, double Precision, double Recall,
    double? FdResnet18, double Seconds);

/// <summary>Real images seen through the evaluator (features, statistics) and optionally through a secondary network.</summary>
public sealed class SampleReference : IDisposable
{
    public Tensor EvaluatorFeatures { get; }
    public FidStatistics EvaluatorStatistics { get; }
    public FidStatistics? SecondaryStatistics { get; }
    public int Count => (int)EvaluatorFeatures.shape[0];

    SampleReference(Tensor features, FidStatistics stats, FidStatistics? secondary)
    {
        EvaluatorFeatures = features;
        EvaluatorStatistics = stats;
        SecondaryStatistics = secondary;
    }

    /// <summary>Images [N, 3, H, W] in [-1, 1] (e.g. a test set at the models' size).</summary>
    public static SampleReference FromImages(Tensor images, EvaluatorFeatureNetwork evaluator, IFeatureNetwork? secondary = null, int batch = 500)
    {
        var features = Features(evaluator, images, batch);
        FidStatistics? sec = null;
        if (secondary != null)
        {
            using var f = Features(secondary, images, batch);
            sec = FidStatistics.FromFeatures(f, source: "reference images");
        }
        return new SampleReference(features, FidStatistics.FromFeatures(features, source: "reference images"), sec);
    }

    static Tensor Features(IFeatureNetwork net, Tensor images, int batch)
    {
        var parts = new List<Tensor>();
        for (long s = 0; s < images.shape[0]; s += batch)
        {
            using var scope = torch.NewDisposeScope();
            var x = (images.narrow(0, s, Math.Min(batch, images.shape[0] - s)) + 1) / 2;
            parts.Add(net.Features(x).MoveToOuterDisposeScope());
        }
        var all = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    public void Dispose()
    {
        EvaluatorFeatures.Dispose();
        EvaluatorStatistics.Dispose();
        SecondaryStatistics?.Dispose();
    }
}

/// <summary>
/// Generates n class-balanced samples (sample i has class i mod classes and noise from (seed, i), as
/// <c>sample-eval --labels balanced</c>) and scores them: FD in the evaluator's feature space against the
/// reference, the fraction the evaluator assigns to the requested class, and k-NN precision/recall.
/// </summary>
public static class SampleQuality
{
    public static SampleQualityResult Measure(SvgGenerator generator, int n, long seed, EvaluatorFeatureNetwork evaluator,
        SampleReference reference, IFeatureNetwork? secondary = null, int batch = 100, int k = 3, Action<int>? progress = null)
    {
        if (n < 2) throw new SvgdException("sample quality needs at least 2 samples");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int classes = generator.Model.Config.NumClasses;
        var features = new List<Tensor>();
        using var secondaryMoments = secondary != null ? new FeatureMoments(secondary.Dim) : null;
        long correct = 0;
        for (int s = 0; s < n; s += batch)
        {
            using var scope = torch.NewDisposeScope();
            int m = Math.Min(batch, n - s);
            var labels = Enumerable.Range(s, m).Select(i => i % classes).ToList();
            var noise = torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(seed, i)).ToArray());
            var images01 = (generator.Decode(generator.SampleLatents(noise, labels)) + 1) / 2;
            var f = evaluator.Features(images01);
            var predicted = evaluator.Logits(f)!.argmax(1);
            correct += predicted.eq(torch.tensor(labels.Select(l => (long)l).ToArray())).sum().item<long>();
            features.Add(f.MoveToOuterDisposeScope());
            secondaryMoments?.Add(secondary!.Features(images01));
            progress?.Invoke(m);
        }
        using var all = torch.cat(features, 0);
        foreach (var t in features) t.Dispose();
        using var stats = FidStatistics.FromFeatures(all, source: "samples");
        double fd = FrechetDistance.Compute(stats, reference.EvaluatorStatistics);
        var pr = PrecisionRecall.Compute(reference.EvaluatorFeatures, all, k);
        double? fdSecondary = null;
        if (secondaryMoments != null && reference.SecondaryStatistics != null)
        {
            using var sec = secondaryMoments.ToStatistics(source: "samples");
            fdSecondary = FrechetDistance.Compute(sec, reference.SecondaryStatistics);
        }
        return new SampleQualityResult(n, fd, (double)correct / n, pr.Precision, pr.Recall, fdSecondary, sw.Elapsed.TotalSeconds);
    }
}
