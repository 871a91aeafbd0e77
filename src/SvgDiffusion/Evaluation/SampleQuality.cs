using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>How good a set of samples is, in the evaluator's feature space.</summary>
public sealed record SampleScore(double FdEvaluator, double ClassAccuracy, double Precision, double Recall, int Samples, double Seconds);

/// <summary>
/// Scores class-conditional samples against real images with a network no generator trains with:
/// FD in its feature space, the share of samples it assigns to the class asked for, and k-NN
/// precision/recall. The reference features are computed once and reused for every score.
/// </summary>
public sealed class SampleQuality : IDisposable
{
    readonly EvaluatorFeatureNetwork _net;
    readonly FidStatistics _refStats;
    public Tensor ReferenceFeatures { get; }
    public int K { get; }
    public int ImageSize { get; }

    public SampleQuality(EvaluatorFeatureNetwork net, ImageFolder reference, int imageSize, int k = 3, int batchSize = 250)
    {
        _net = net;
        K = k;
        ImageSize = imageSize;
        ReferenceFeatures = FolderFeatures(net, reference, Enumerable.Range(0, reference.Count).ToList(), imageSize, batchSize);
        _refStats = Statistics(ReferenceFeatures, reference.Root);
    }

    /// <summary>Evaluator features of the given images of a folder, centre-cropped to <paramref name="size"/>.</summary>
    public static Tensor FolderFeatures(EvaluatorFeatureNetwork net, ImageFolder folder, IReadOnlyList<int> indices, int size, int batchSize = 250)
    {
        var parts = new List<Tensor>();
        foreach (var chunk in indices.Chunk(Math.Max(1, batchSize)))
        {
            using var scope = torch.NewDisposeScope();
            var x = folder.CenterBatch(chunk, size);
            parts.Add(net.Features((x + 1) / 2).MoveToOuterDisposeScope());
        }
        var all = torch.cat(parts, 0);
        foreach (var t in parts) t.Dispose();
        return all;
    }

    /// <summary>Evenly spaced indices: a class-sorted folder gives every class its share.</summary>
    public static IReadOnlyList<int> Spread(int count, int n) =>
        n <= 0 || n >= count ? Enumerable.Range(0, count).ToList() : Enumerable.Range(0, n).Select(i => (int)((long)i * count / n)).ToList();

    static FidStatistics Statistics(Tensor features, string source)
    {
        using var m = new FeatureMoments(features.shape[1]);
        m.Add(features);
        return m.ToStatistics(null, source);
    }

    /// <summary>Scores features of real or generated images [N, D] (and, when given, the classes they should show).</summary>
    public SampleScore ScoreFeatures(Tensor features, Tensor? askedLabels, double seconds = 0)
    {
        using var scope = torch.NewDisposeScope();
        using var stats = Statistics(features, "samples");
        double fd = FrechetDistance.Compute(stats, _refStats);
        double acc = double.NaN;
        if (askedLabels is not null && _net.Logits(features) is Tensor logits)
            acc = logits.argmax(1).eq(askedLabels).to(ScalarType.Float64).mean().item<double>();
        var pr = PrecisionRecall.Compute(ReferenceFeatures, features, K);
        return new SampleScore(fd, acc, pr.Precision, pr.Recall, (int)features.shape[0], seconds);
    }

    /// <summary>
    /// Draws <paramref name="n"/> samples, class i mod classes for sample i, noise from (seed, i) as
    /// <c>sample-eval</c> does, decodes them and scores them.
    /// </summary>
    public SampleScore Score(SvgGenerator generator, int n, long seed, int batchSize, Action<long>? progress = null)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int classes = generator.Model.Config.NumClasses;
        var parts = new List<Tensor>();
        try
        {
            for (int s = 0; s < n; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                int m = Math.Min(batchSize, n - s);
                var noise = torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(seed, i)).ToArray());
                var latents = generator.SampleLatents(noise, Enumerable.Range(s, m).Select(i => i % classes).ToList());
                var images01 = (generator.Decode(latents) + 1) / 2;
                parts.Add(_net.Features(images01).MoveToOuterDisposeScope());
                progress?.Invoke(m);
            }
            using var features = torch.cat(parts, 0);
            using var asked = torch.tensor(Enumerable.Range(0, n).Select(i => (long)(i % classes)).ToArray());
            return ScoreFeatures(features, asked, sw.Elapsed.TotalSeconds);
        }
        finally { foreach (var t in parts) t.Dispose(); }
    }

    public void Dispose()
    {
        ReferenceFeatures.Dispose();
        _refStats.Dispose();
    }
}
