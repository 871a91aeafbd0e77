using SvgDiffusion.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>Hyper-parameters of a linear classification probe.</summary>
public sealed record LinearProbeConfig
{
    public int Epochs { get; init; } = 90;
    public int BatchSize { get; init; } = 256;
    /// <summary>AdamW base learning rate, reached after the warmup and decayed by a half-cosine.</summary>
    public double LearningRate { get; init; } = 1e-3;
    public double MinLearningRate { get; init; } = 0.0;
    public int WarmupEpochs { get; init; } = 0;
    /// <summary>AdamW decoupled weight decay, applied to the linear weight only (not the bias).</summary>
    public double WeightDecay { get; init; } = 0.0;
    /// <summary>Normalise the features with a parameter-free batch norm before the linear layer (MAE / DINO linear probes).</summary>
    public bool BatchNorm { get; init; } = true;
    /// <summary>Seeds the head's initialisation and every epoch's mini-batch order.</summary>
    public long Seed { get; init; } = 0;

    public LinearProbeConfig Validate()
    {
        if (Epochs < 1) throw new SvgdException($"probe epochs must be positive, got {Epochs}");
        if (BatchSize < (BatchNorm ? 2 : 1)) throw new SvgdException($"probe batch size must be at least {(BatchNorm ? 2 : 1)}{(BatchNorm ? " with batch norm" : "")}, got {BatchSize}");
        if (!(LearningRate > 0)) throw new SvgdException($"probe learning rate must be positive, got {LearningRate}");
        if (MinLearningRate < 0 || MinLearningRate > LearningRate) throw new SvgdException($"probe minimum learning rate must lie in [0, {LearningRate}], got {MinLearningRate}");
        if (WarmupEpochs < 0 || WarmupEpochs >= Epochs && WarmupEpochs > 0) throw new SvgdException($"probe warmup epochs must lie in [0, {Epochs}), got {WarmupEpochs}");
        if (WeightDecay < 0) throw new SvgdException($"probe weight decay must be non-negative, got {WeightDecay}");
        return this;
    }
}

/// <summary>Top-1 / top-k accuracy (fractions) over <see cref="Count"/> samples; <see cref="TopK"/> is 5, or the class count when smaller.</summary>
public sealed record ClassificationMetrics(double Top1, double Top5, int TopK, long Count)
{
    public override string ToString() => $"top-1 {Top1:P2}, top-{TopK} {Top5:P2} ({Count} samples)";
}

public sealed record LinearProbeResult(ClassificationMetrics Validation, ClassificationMetrics Train, IReadOnlyList<ProbeEpoch> History);

/// <summary>
/// A linear classifier on frozen features. As in the MAE and DINO linear-probe recipes, the features
/// may first go through <c>BatchNorm1d(affine: false, eps: 1e-6)</c>: a parameter-free standardisation
/// (with running statistics at evaluation time) that makes one learning rate suit features of any scale,
/// and that is itself linear at evaluation time, so the probe stays a linear classifier. The head is
/// initialised as MAE's (weights ~ truncated normal, std 0.01; bias 0) and trained with cross-entropy and
/// AdamW under <see cref="ProbeSchedule"/>'s warmup + cosine schedule.
/// </summary>
public sealed class LinearProbe : nn.Module<Tensor, Tensor>
{
    readonly BatchNorm1d? bn;
    readonly Linear head;

    public int FeatureDim { get; }
    public int NumClasses { get; }
    public bool HasBatchNorm => bn != null;

    public LinearProbe(int featureDim, int numClasses, bool batchNorm = true, Generator? generator = null) : base("LinearProbe")
    {
        if (featureDim < 1 || numClasses < 2) throw new SvgdException($"a linear probe needs features and at least 2 classes, got dim {featureDim}, {numClasses} classes");
        FeatureDim = featureDim;
        NumClasses = numClasses;
        if (batchNorm) bn = nn.BatchNorm1d(featureDim, eps: 1e-6, affine: false);
        head = nn.Linear(featureDim, numClasses);
        using (torch.no_grad())
        {
            nn.init.trunc_normal_(head.weight!, 0.0, 0.01, -0.02, 0.02, generator);
            head.bias!.zero_();
        }
        RegisterComponents();
    }

    /// <summary>Logits [B, K] of features [B, D].</summary>
    public override Tensor forward(Tensor features)
    {
        if (features.dim() != 2 || features.shape[1] != FeatureDim)
            throw new SvgdException($"linear probe expects features [B, {FeatureDim}], got {Checkpoints.Checkpoint.Shape(features.shape)}");
        if (bn == null) return head.forward(features);
        using var x = bn.forward(features);
        return head.forward(x);
    }

    /// <summary>Trains on <paramref name="features"/> [N, D] with int64 <paramref name="labels"/> [N]; returns the per-epoch history.</summary>
    public IReadOnlyList<ProbeEpoch> Fit(Tensor features, Tensor labels, LinearProbeConfig config, Action<ProbeEpoch>? onEpoch = null)
    {
        config = config.Validate();
        long n = features.shape[0];
        if (labels.dim() != 1 || labels.shape[0] != n) throw new SvgdException($"{n} feature rows but labels of shape {Checkpoints.Checkpoint.Shape(labels.shape)}");
        if (n < 2) throw new SvgdException("a linear probe needs at least 2 training samples");
        CheckLabels(labels, NumClasses);
        var device = head.weight!.device;
        using var x = features.to(ScalarType.Float32).to(device);
        using var y = labels.to(ScalarType.Int64).to(device);
        return ProbeSchedule.Train(this, n, config.Epochs, config.BatchSize, config.WarmupEpochs, config.LearningRate,
            config.MinLearningRate, config.WeightDecay, config.Seed, idx =>
            {
                var i = idx.to(device);
                return nn.functional.cross_entropy(forward(x.index_select(0, i)), y.index_select(0, i));
            }, onEpoch);
    }

    /// <summary>Top-1 / top-5 accuracy on <paramref name="features"/> [N, D] (eval mode).</summary>
    public ClassificationMetrics Evaluate(Tensor features, Tensor labels, int batchSize = 4096)
    {
        eval();
        using var _ = torch.no_grad();
        var device = head.weight!.device;
        var logits = new List<Tensor>();
        try
        {
            for (long s = 0; s < features.shape[0]; s += batchSize)
            {
                using var chunk = features.narrow(0, s, Math.Min(batchSize, features.shape[0] - s)).to(ScalarType.Float32).to(device);
                logits.Add(forward(chunk));
            }
            using var all = torch.cat(logits, 0);
            return Accuracy(all, labels);
        }
        finally { foreach (var l in logits) l.Dispose(); }
    }

    /// <summary>Top-1 and top-k (k = min(5, classes)) accuracy of <paramref name="logits"/> [N, K] against labels [N].</summary>
    public static ClassificationMetrics Accuracy(Tensor logits, Tensor labels, int k = 5)
    {
        if (logits.dim() != 2 || labels.dim() != 1 || labels.shape[0] != logits.shape[0])
            throw new SvgdException($"logits {Checkpoints.Checkpoint.Shape(logits.shape)} and labels {Checkpoints.Checkpoint.Shape(labels.shape)} do not match");
        long n = logits.shape[0];
        if (n == 0) throw new SvgdException("accuracy of no samples");
        using var scope = torch.NewDisposeScope();
        int kk = (int)Math.Min(k, logits.shape[1]);
        var y = labels.to(ScalarType.Int64).to(logits.device).unsqueeze(1);
        var (_, top) = logits.topk(kk, dim: 1);
        var hits = top.eq(y);
        double top1 = hits.narrow(1, 0, 1).any(1).to(ScalarType.Float64).mean().item<double>();
        double topk = hits.any(1).to(ScalarType.Float64).mean().item<double>();
        return new ClassificationMetrics(top1, topk, kk, n);
    }

    /// <summary>Trains a fresh probe on the training features and reports validation (and training) accuracy.</summary>
    public static LinearProbeResult TrainAndEvaluate(Tensor trainFeatures, Tensor trainLabels, Tensor valFeatures, Tensor valLabels,
        int numClasses, LinearProbeConfig config, Action<ProbeEpoch>? onEpoch = null, Device? device = null)
    {
        config = config.Validate();
        using var init = RunCheckpoint.StepGenerator(config.Seed, 0, stream: 0);
        using var probe = new LinearProbe((int)trainFeatures.shape[1], numClasses, config.BatchNorm, init);
        if (device != null) probe.to(device);
        var history = probe.Fit(trainFeatures, trainLabels, config, onEpoch);
        return new LinearProbeResult(probe.Evaluate(valFeatures, valLabels), probe.Evaluate(trainFeatures, trainLabels), history);
    }

    internal static void CheckLabels(Tensor labels, int numClasses)
    {
        using var scope = torch.NewDisposeScope();
        if (labels.numel() == 0) return;
        long min = labels.min().item<long>(), max = labels.max().item<long>();
        if (min < 0 || max >= numClasses) throw new SvgdException($"labels range over {min}..{max} but the probe has {numClasses} classes");
    }
}
