using SvgDiffusion.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>Hyper-parameters of a linear segmentation probe.</summary>
public sealed record SegmentationProbeConfig
{
    public int Epochs { get; init; } = 20;
    public int BatchSize { get; init; } = 16;
    public double LearningRate { get; init; } = 1e-3;
    public double MinLearningRate { get; init; } = 0.0;
    public int WarmupEpochs { get; init; } = 0;
    /// <summary>AdamW decoupled weight decay on the 1x1 conv weight.</summary>
    public double WeightDecay { get; init; } = 1e-4;
    public int IgnoreIndex { get; init; } = SegmentationFolder.DefaultIgnoreIndex;
    public long Seed { get; init; } = 0;

    public SegmentationProbeConfig Validate()
    {
        if (Epochs < 1) throw new SvgdException($"probe epochs must be positive, got {Epochs}");
        if (BatchSize < 2) throw new SvgdException($"segmentation probe batch size must be at least 2 (batch norm), got {BatchSize}");
        if (!(LearningRate > 0)) throw new SvgdException($"probe learning rate must be positive, got {LearningRate}");
        if (MinLearningRate < 0 || MinLearningRate > LearningRate) throw new SvgdException($"probe minimum learning rate must lie in [0, {LearningRate}], got {MinLearningRate}");
        if (WarmupEpochs < 0 || WarmupEpochs >= Epochs && WarmupEpochs > 0) throw new SvgdException($"probe warmup epochs must lie in [0, {Epochs}), got {WarmupEpochs}");
        if (WeightDecay < 0) throw new SvgdException($"probe weight decay must be non-negative, got {WeightDecay}");
        return this;
    }
}

public sealed record SegmentationProbeResult(SegmentationMetrics Validation, IReadOnlyList<ProbeEpoch> History);

/// <summary>
/// The linear segmentation probe of DINOv2/v3 ("linear" head): frozen patch features [B, D, h, w] ->
/// BatchNorm2d -> 1x1 convolution to K class logits -> bilinear upsampling (align_corners false) to the
/// label resolution -> per-pixel cross-entropy, pixels labelled with the ignore index left out.
/// Trained with AdamW under <see cref="ProbeSchedule"/>; evaluated with <see cref="SegmentationMetrics"/>.
/// </summary>
public sealed class SegmentationProbe : nn.Module<Tensor, Tensor>
{
    readonly BatchNorm2d bn;
    readonly ConvLayer conv_seg;

    public int FeatureDim { get; }
    public int NumClasses { get; }

    public SegmentationProbe(int featureDim, int numClasses, Generator? generator = null) : base("SegmentationProbe")
    {
        if (featureDim < 1 || numClasses < 2) throw new SvgdException($"a segmentation probe needs features and at least 2 classes, got dim {featureDim}, {numClasses} classes");
        FeatureDim = featureDim;
        NumClasses = numClasses;
        bn = nn.BatchNorm2d(featureDim);
        conv_seg = new ConvLayer(featureDim, numClasses, 1);
        using (torch.no_grad())
        {
            // Set explicitly rather than trusting the native defaults.
            bn.weight!.fill_(1.0);
            bn.bias!.zero_();
            nn.init.normal_(conv_seg.Weight, 0.0, 0.01, generator);
            conv_seg.Bias!.zero_();
        }
        RegisterComponents();
    }

    /// <summary>Logits [B, K, h, w] at the feature grid's resolution.</summary>
    public override Tensor forward(Tensor features)
    {
        if (features.dim() != 4 || features.shape[1] != FeatureDim)
            throw new SvgdException($"segmentation probe expects features [B, {FeatureDim}, h, w], got {Checkpoints.Checkpoint.Shape(features.shape)}");
        using var x = bn.forward(features);
        return conv_seg.forward(x);
    }

    /// <summary>Logits [B, K, <paramref name="height"/>, <paramref name="width"/>]: the grid logits bilinearly upsampled.</summary>
    public Tensor Logits(Tensor features, long height, long width)
    {
        using var grid = forward(features);
        return nn.functional.interpolate(grid, new[] { height, width }, mode: InterpolationMode.Bilinear, align_corners: false);
    }

    /// <summary>Class map [B, H, W] int64.</summary>
    public Tensor Predict(Tensor features, long height, long width)
    {
        using var _ = torch.no_grad();
        using var logits = Logits(features, height, width);
        return logits.argmax(1);
    }

    /// <summary>Trains on features [N, D, h, w] and labels [N, H, W] (class indices, ignore index allowed); returns the per-epoch history.</summary>
    public IReadOnlyList<ProbeEpoch> Fit(Tensor features, Tensor labels, SegmentationProbeConfig config, Action<ProbeEpoch>? onEpoch = null)
    {
        config = config.Validate();
        long n = features.shape[0];
        CheckPair(features, labels);
        if (n < 2) throw new SvgdException("a segmentation probe needs at least 2 training images (batch norm)");
        CheckLabels(labels, NumClasses, config.IgnoreIndex);
        var device = conv_seg.Weight.device;
        long h = labels.shape[1], w = labels.shape[2];
        // A batch whose pixels are all ignored gives a NaN loss; Train leaves it out of the epoch mean.
        return ProbeSchedule.Train(this, n, config.Epochs, config.BatchSize, config.WarmupEpochs, config.LearningRate,
            config.MinLearningRate, config.WeightDecay, config.Seed, idx =>
            {
                var x = features.index_select(0, idx).to(ScalarType.Float32).to(device);
                var y = labels.index_select(0, idx).to(ScalarType.Int64).to(device);
                return nn.functional.cross_entropy(Logits(x, h, w), y, ignore_index: config.IgnoreIndex);
            }, onEpoch);
    }

    /// <summary>mIoU, pixel accuracy and the confusion matrix on features [N, D, h, w] and labels [N, H, W] (eval mode).</summary>
    public SegmentationMetrics Evaluate(Tensor features, Tensor labels, int batchSize = 16, int ignoreIndex = SegmentationFolder.DefaultIgnoreIndex)
    {
        CheckPair(features, labels);
        eval();
        var metrics = new SegmentationMetrics(NumClasses, ignoreIndex);
        var device = conv_seg.Weight.device;
        for (long s = 0; s < features.shape[0]; s += batchSize)
        {
            using var scope = torch.NewDisposeScope();
            long len = Math.Min(batchSize, features.shape[0] - s);
            var x = features.narrow(0, s, len).to(ScalarType.Float32).to(device);
            metrics.Update(Predict(x, labels.shape[1], labels.shape[2]), labels.narrow(0, s, len));
        }
        return metrics;
    }

    /// <summary>Trains a fresh probe and evaluates it on the validation set.</summary>
    public static SegmentationProbeResult TrainAndEvaluate(Tensor trainFeatures, Tensor trainLabels, Tensor valFeatures, Tensor valLabels,
        int numClasses, SegmentationProbeConfig config, Action<ProbeEpoch>? onEpoch = null, Device? device = null)
    {
        config = config.Validate();
        using var init = RunCheckpoint.StepGenerator(config.Seed, 0, stream: 0);
        using var probe = new SegmentationProbe((int)trainFeatures.shape[1], numClasses, init);
        if (device != null) probe.to(device);
        var history = probe.Fit(trainFeatures, trainLabels, config, onEpoch);
        return new SegmentationProbeResult(probe.Evaluate(valFeatures, valLabels, ignoreIndex: config.IgnoreIndex), history);
    }

    static void CheckPair(Tensor features, Tensor labels)
    {
        if (labels.dim() != 3 || labels.shape[0] != features.shape[0])
            throw new SvgdException($"{features.shape[0]} feature grids but labels of shape {Checkpoints.Checkpoint.Shape(labels.shape)} (expected [N, H, W])");
    }

    static void CheckLabels(Tensor labels, int numClasses, int ignoreIndex)
    {
        using var scope = torch.NewDisposeScope();
        var l = labels.to(ScalarType.Int64);
        var bad = l.ne(ignoreIndex).logical_and(l.lt(0).logical_or(l.ge(numClasses)));
        if (bad.any().item<bool>())
            throw new SvgdException($"label value {l.masked_select(bad)[0].item<long>()} is neither a class index (0..{numClasses - 1}) nor the ignore index {ignoreIndex}");
    }
}
