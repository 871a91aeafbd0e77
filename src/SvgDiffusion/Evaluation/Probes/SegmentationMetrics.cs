using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>
/// Semantic-segmentation metrics from a confusion matrix (rows = ground truth, columns = prediction),
/// as mmsegmentation reports them for ADE20K: per-class IoU = TP / (TP + FP + FN); a class absent from
/// both the ground truth and the predictions has no IoU (NaN) and is left out of the mean (nanmean),
/// so mIoU is over the classes present in the ground truth or predicted. Pixels labelled with the
/// ignore index never enter the matrix.
/// </summary>
public sealed class SegmentationMetrics
{
    readonly long[] _confusion;   // [gt * K + pred]

    public int NumClasses { get; }
    public int IgnoreIndex { get; }

    public SegmentationMetrics(int numClasses, int ignoreIndex = 255)
    {
        if (numClasses < 1) throw new SvgdException($"segmentation metrics need at least one class, got {numClasses}");
        if (ignoreIndex >= 0 && ignoreIndex < numClasses)
            throw new SvgdException($"ignore index {ignoreIndex} is a class index (classes 0..{numClasses - 1})");
        NumClasses = numClasses;
        IgnoreIndex = ignoreIndex;
        _confusion = new long[(long)numClasses * numClasses];
    }

    /// <summary>Metrics of a given confusion matrix [ground truth, prediction].</summary>
    public static SegmentationMetrics FromConfusion(long[,] confusion, int ignoreIndex = 255)
    {
        int k = confusion.GetLength(0);
        if (confusion.GetLength(1) != k) throw new SvgdException($"confusion matrix must be square, got {k}x{confusion.GetLength(1)}");
        var m = new SegmentationMetrics(k, ignoreIndex);
        for (int g = 0; g < k; g++)
            for (int p = 0; p < k; p++)
            {
                if (confusion[g, p] < 0) throw new SvgdException("confusion matrix counts must be non-negative");
                m._confusion[g * k + p] = confusion[g, p];
            }
        return m;
    }

    /// <summary>Pixels of class <paramref name="groundTruth"/> predicted as <paramref name="prediction"/>.</summary>
    public long this[int groundTruth, int prediction] => _confusion[groundTruth * NumClasses + prediction];

    public long[,] Confusion()
    {
        var c = new long[NumClasses, NumClasses];
        for (int g = 0; g < NumClasses; g++)
            for (int p = 0; p < NumClasses; p++) c[g, p] = this[g, p];
        return c;
    }

    /// <summary>
    /// Adds a batch: <paramref name="predictions"/> and <paramref name="labels"/> of the same shape, integer
    /// class indices; label pixels equal to <see cref="IgnoreIndex"/> are skipped. A label outside
    /// 0..K-1 (other than the ignore index) is an error, as is a prediction outside that range.
    /// </summary>
    public void Update(Tensor predictions, Tensor labels)
    {
        if (!predictions.shape.SequenceEqual(labels.shape))
            throw new SvgdException($"predictions {Checkpoints.Checkpoint.Shape(predictions.shape)} and labels {Checkpoints.Checkpoint.Shape(labels.shape)} differ in shape");
        using var scope = torch.NewDisposeScope();
        var gt = labels.detach().cpu().to(ScalarType.Int64).flatten();
        var pred = predictions.detach().cpu().to(ScalarType.Int64).flatten();
        var valid = gt.ne(IgnoreIndex);
        gt = gt.masked_select(valid);
        pred = pred.masked_select(valid);
        if (gt.numel() == 0) return;
        long k = NumClasses;
        if (gt.lt(0).logical_or(gt.ge(k)).any().item<bool>())
        {
            long bad = gt.masked_select(gt.lt(0).logical_or(gt.ge(k)))[0].item<long>();
            throw new SvgdException($"label value {bad} is neither a class index (0..{k - 1}) nor the ignore index {IgnoreIndex}");
        }
        if (pred.lt(0).logical_or(pred.ge(k)).any().item<bool>())
            throw new SvgdException($"predictions must be class indices 0..{k - 1}");
        var counts = torch.bincount(gt * k + pred, minlength: k * k).to(ScalarType.Int64).contiguous();
        var span = counts.data<long>();
        for (int i = 0; i < _confusion.Length; i++) _confusion[i] += span[i];
    }

    /// <summary>Pixels counted (ignore pixels excluded).</summary>
    public long Total => _confusion.Sum();

    long Diagonal(int c) => this[c, c];
    long RowSum(int g) { long s = 0; for (int p = 0; p < NumClasses; p++) s += this[g, p]; return s; }
    long ColumnSum(int p) { long s = 0; for (int g = 0; g < NumClasses; g++) s += this[g, p]; return s; }

    /// <summary>Correct pixels / counted pixels (NaN when nothing was counted).</summary>
    public double PixelAccuracy
    {
        get
        {
            long total = Total, correct = 0;
            for (int c = 0; c < NumClasses; c++) correct += Diagonal(c);
            return total == 0 ? double.NaN : (double)correct / total;
        }
    }

    /// <summary>Per-class IoU; NaN for a class that is neither in the ground truth nor predicted.</summary>
    public IReadOnlyList<double> ClassIoU =>
        Enumerable.Range(0, NumClasses).Select(c =>
        {
            long union = RowSum(c) + ColumnSum(c) - Diagonal(c);
            return union == 0 ? double.NaN : (double)Diagonal(c) / union;
        }).ToList();

    /// <summary>Per-class accuracy (recall); NaN for a class absent from the ground truth.</summary>
    public IReadOnlyList<double> ClassAccuracy =>
        Enumerable.Range(0, NumClasses).Select(c =>
        {
            long n = RowSum(c);
            return n == 0 ? double.NaN : (double)Diagonal(c) / n;
        }).ToList();

    /// <summary>Classes that have an IoU: present in the ground truth or the predictions.</summary>
    public int ClassesCounted => ClassIoU.Count(v => !double.IsNaN(v));

    /// <summary>Mean IoU over <see cref="ClassesCounted"/> classes (NaN when there are none).</summary>
    public double MeanIoU => NanMean(ClassIoU);

    /// <summary>Mean per-class accuracy over the classes present in the ground truth.</summary>
    public double MeanAccuracy => NanMean(ClassAccuracy);

    static double NanMean(IEnumerable<double> values)
    {
        var v = values.Where(x => !double.IsNaN(x)).ToList();
        return v.Count == 0 ? double.NaN : v.Average();
    }

    public override string ToString() =>
        $"mIoU {MeanIoU:P2} over {ClassesCounted} classes, pixel accuracy {PixelAccuracy:P2}, mean accuracy {MeanAccuracy:P2} ({Total} pixels)";
}
