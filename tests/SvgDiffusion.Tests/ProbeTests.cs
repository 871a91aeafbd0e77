using System.Diagnostics;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation.Probes;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Models.Encoders;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class ProbeTests(ITestOutputHelper log)
{
    static DinoVisionTransformer TinyDino() => Dinov3Checkpoint.Load(Reference.File_("dinov3_swiglu.pth"));

    // ---- metrics ---------------------------------------------------------------------------------

    [Fact]
    public void SegmentationMetricsFromHandMadeConfusion()
    {
        // rows = ground truth, columns = prediction; class 3 appears in neither, class 2 only as a prediction.
        var m = SegmentationMetrics.FromConfusion(new long[,]
        {
            { 50, 10, 0, 0 },
            { 5, 30, 5, 0 },
            { 0, 0, 0, 0 },
            { 0, 0, 0, 0 },
        });
        Assert.Equal(100, m.Total);
        Assert.Equal(0.80, m.PixelAccuracy, 12);
        var iou = m.ClassIoU;
        Assert.Equal(50.0 / (60 + 55 - 50), iou[0], 12);
        Assert.Equal(30.0 / (40 + 40 - 30), iou[1], 12);
        Assert.Equal(0.0, iou[2], 12);            // predicted but never true: counts, as 0
        Assert.True(double.IsNaN(iou[3]));        // in neither: excluded
        Assert.Equal(3, m.ClassesCounted);
        Assert.Equal((50.0 / 65 + 30.0 / 50 + 0.0) / 3, m.MeanIoU, 12);
        Assert.Equal((50.0 / 60 + 30.0 / 40) / 2, m.MeanAccuracy, 12);   // recall over classes present in GT
    }

    [Fact]
    public void SegmentationMetricsUpdateSkipsIgnorePixelsAndRejectsBadLabels()
    {
        var m = new SegmentationMetrics(3);
        using var labels = torch.tensor(new long[] { 0, 0, 1, 2, 255, 255, 2, 1 }).view(2, 4);
        using var pred = torch.tensor(new long[] { 0, 1, 1, 2, 2, 0, 0, 1 }).view(2, 4);
        m.Update(pred, labels);
        Assert.Equal(6, m.Total);
        Assert.Equal(1, m[0, 0]); Assert.Equal(1, m[0, 1]); Assert.Equal(2, m[1, 1]);
        Assert.Equal(1, m[2, 2]); Assert.Equal(1, m[2, 0]);
        Assert.Equal(4.0 / 6, m.PixelAccuracy, 12);
        m.Update(pred, labels);   // accumulates
        Assert.Equal(12, m.Total);
        Assert.Equal(4.0 / 6, m.PixelAccuracy, 12);

        using var bad = torch.tensor(new long[] { 0, 3 });
        using var two = torch.tensor(new long[] { 0, 1 });
        var e = Assert.Throws<SvgdException>(() => m.Update(two, bad));
        Assert.Contains("label value 3", e.Message);
        Assert.Throws<SvgdException>(() => new SegmentationMetrics(300));   // 255 would be a class
    }

    [Fact]
    public void CosineScheduleWithWarmup()
    {
        Assert.Equal(0.0, ProbeSchedule.LearningRate(0, 10, 2, 1.0), 12);
        Assert.Equal(0.5, ProbeSchedule.LearningRate(1, 10, 2, 1.0), 12);
        Assert.Equal(1.0, ProbeSchedule.LearningRate(2, 10, 2, 1.0), 12);
        Assert.Equal(0.55, ProbeSchedule.LearningRate(6, 10, 2, 1.0, 0.1), 12);   // half way down the cosine
        Assert.Equal(0.1, ProbeSchedule.LearningRate(10, 10, 2, 1.0, 0.1), 12);
        Assert.Equal(1.0, ProbeSchedule.LearningRate(0, 10, 0, 1.0), 12);
    }

    [Fact]
    public void AccuracyCountsTopOneAndTopFive()
    {
        using var logits = torch.tensor(new float[,]
        {
            { 9, 1, 2, 3, 4, 5, 0 },   // label 0: top-1
            { 9, 8, 7, 6, 5, 4, 3 },   // label 4: 5th -> top-5 only
            { 9, 8, 7, 6, 5, 4, 3 },   // label 6: neither
        });
        using var labels = torch.tensor(new long[] { 0, 4, 6 });
        var a = LinearProbe.Accuracy(logits, labels);
        Assert.Equal(1.0 / 3, a.Top1, 12);
        Assert.Equal(2.0 / 3, a.Top5, 12);
        Assert.Equal(5, a.TopK);
    }

    // ---- linear probe --------------------------------------------------------------------------

    [Fact]
    public void LinearProbeLearnsSeparableClassesReproducibly()
    {
        // 4 Gaussian clusters in 16-d at an arbitrary scale and offset: batch norm makes that irrelevant.
        var g = new Generator(11);
        using var centres = torch.randn(new long[] { 4, 16 }, generator: g) * 3;
        Tensor Draw(int perClass, out Tensor labels)
        {
            labels = torch.arange(4).repeat_interleave(perClass);
            return (centres.index_select(0, labels) + torch.randn(new long[] { 4 * perClass, 16 }, generator: g)) * 50 + 1000;
        }
        using var xTrain = Draw(40, out var yTrain);
        using var xVal = Draw(20, out var yVal);
        var cfg = new LinearProbeConfig { Epochs = 30, BatchSize = 32, LearningRate = 1e-2, WarmupEpochs = 2, WeightDecay = 1e-4, Seed = 3 };
        var a = LinearProbe.TrainAndEvaluate(xTrain, yTrain, xVal, yVal, 4, cfg);
        var b = LinearProbe.TrainAndEvaluate(xTrain, yTrain, xVal, yVal, 4, cfg);
        log.WriteLine($"val {a.Validation}, train {a.Train}; loss {a.History[0].Loss:F3} -> {a.History[^1].Loss:F3}");
        Assert.True(a.Validation.Top1 > 0.9, $"separable clusters: {a.Validation}");
        Assert.Equal(1.0, a.Validation.Top5);   // k = 4 classes
        Assert.True(a.History[^1].Loss < 0.5 * a.History[0].Loss);
        Assert.Equal(a.History.Select(e => e.Loss), b.History.Select(e => e.Loss));   // same seed, same run
        Assert.True(a.History[^1].LearningRate < 1e-3 * cfg.LearningRate, "the cosine ends near zero");
    }

    // ---- Fashion-MNIST through frozen features -------------------------------------------------
    //
    // The reference DINOv3 and SVG encoders have random weights, so their features are weak. Measured
    // (4-fold, 3 training images per class, held-out top-1; chance 10%), with the probe settings below:
    //   DINOv3 class token ++ mean patch token: 30% at 64 px (4x4 grid), 45% at 32 px (2x2 grid);
    //   SVG latent mean: 28% at 64 px;
    //   DINOv3 patch tokens in grid order, flattened: 62% at 64 px; SVG latent grid flattened: 62%;
    //   raw 28x28 pixels, for comparison: 45-53%.
    // Pooling discards the layout that random features still carry, so the pooled vectors sit close
    // to twice chance at 64 px; the assertions are on the settings with a clear margin, and the 64 px
    // pooled numbers are checked only to be above chance.

    /// <summary>
    /// 4-fold cross-validation over the 40 committed images: each fold trains on 3 images per class and
    /// validates on the 4th (never seen in training); returns top-1 over all 40 held-out predictions.
    /// </summary>
    double CrossValidated(Tensor features, Tensor labelTensor, string what)
    {
        var labels = labelTensor.data<long>().ToArray();
        var rank = new int[labels.Length];
        var seen = new Dictionary<long, int>();
        for (int i = 0; i < labels.Length; i++) { seen.TryGetValue(labels[i], out int r); rank[i] = r; seen[labels[i]] = r + 1; }
        Assert.All(seen.Values, n => Assert.Equal(4, n));
        double correct = 0, correct5 = 0;
        for (int fold = 0; fold < 4; fold++)
        {
            var train = Enumerable.Range(0, labels.Length).Where(i => rank[i] != fold).Select(i => (long)i).ToArray();
            var val = Enumerable.Range(0, labels.Length).Where(i => rank[i] == fold).Select(i => (long)i).ToArray();
            Assert.Empty(train.Intersect(val));
            using var ti = torch.tensor(train);
            using var vi = torch.tensor(val);
            var r = LinearProbe.TrainAndEvaluate(features.index_select(0, ti), labelTensor.index_select(0, ti),
                features.index_select(0, vi), labelTensor.index_select(0, vi), 10,
                new LinearProbeConfig { Epochs = 100, BatchSize = 10, LearningRate = 3e-3, WeightDecay = 1e-3, Seed = fold });
            correct += r.Validation.Top1 * val.Length;
            correct5 += r.Validation.Top5 * val.Length;
        }
        double top1 = correct / labels.Length;
        log.WriteLine($"{what} [{features.shape[1]}-d]: 4-fold held-out top-1 {top1:P1}, top-5 {correct5 / labels.Length:P1} (chance 10% / 50%)");
        return top1;
    }

    [Fact]
    public void FashionMnistClassesFromFrozenDinoFeatures()
    {
        var sw = Stopwatch.StartNew();
        var data = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        using var dino = TinyDino();
        var ex = new FeatureExtractor(dino, "dinov3_swiglu.pth");
        Assert.Equal(128, ex.VectorDim);

        using var v64 = ex.ExtractVectors(data, 64);
        Assert.Equal(new long[] { 40, 128 }, v64.Features.shape);   // class token ++ mean patch token
        double pooled64 = CrossValidated(v64.Features, v64.Labels!, "DINOv3 cls ++ mean patch, 64 px");
        using var v32 = ex.ExtractVectors(data, 32);
        double pooled32 = CrossValidated(v32.Features, v32.Labels!, "DINOv3 cls ++ mean patch, 32 px");
        using var g64 = ex.ExtractGrids(data, 64);
        Assert.Equal(new long[] { 40, 64, 4, 4 }, g64.Features.shape);
        using var flat = g64.Features.flatten(1);
        double patches = CrossValidated(flat, g64.Labels!, "DINOv3 patch tokens flattened, 64 px");
        log.WriteLine($"{sw.Elapsed.TotalSeconds:F1} s");

        Assert.True(pooled64 > 0.1, $"pooled 64 px top-1 {pooled64:P1} should be above chance");
        Assert.True(pooled32 > 0.2, $"pooled 32 px top-1 {pooled32:P1} should be above twice chance");
        Assert.True(patches > 0.4, $"patch-token top-1 {patches:P1} should be well above twice chance");
    }

    [Fact]
    public void FashionMnistClassesFromSvgLatent()
    {
        var sw = Stopwatch.StartNew();
        var data = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        using var ae = AutoencoderTrainingTests.TinyAutoencoder(1);
        var ex = new FeatureExtractor(ae, "tiny");
        var opts = new ExtractionOptions { BatchSize = 40 };
        Assert.Contains("encodes 64x64", Assert.Throws<SvgdException>(() => ex.ExtractVectors(data, 32, opts)).Message);
        using var mean = ex.ExtractVectors(data, 64, opts);
        Assert.Equal(new long[] { 40, ae.Config.LatentChannels }, mean.Features.shape);
        double pooled = CrossValidated(mean.Features, mean.Labels!, "SVG latent mean, 64 px");
        using var grid = ex.ExtractGrids(data, 64, opts);
        Assert.Equal(new long[] { 40, ae.Config.LatentChannels, 4, 4 }, grid.Features.shape);
        using var mean2 = grid.Features.mean(new long[] { 2, 3 });
        Reference.Close(mean.Features, mean2, 1e-5, "vector = grid mean");
        using var flat = grid.Features.flatten(1);
        double full = CrossValidated(flat, grid.Labels!, "SVG latent grid flattened, 64 px");
        log.WriteLine($"{sw.Elapsed.TotalSeconds:F1} s");

        Assert.True(pooled > 0.1, $"latent-mean top-1 {pooled:P1} should be above chance");
        Assert.True(full > 0.4, $"latent-grid top-1 {full:P1} should be well above twice chance");
    }

    // ---- feature cache -------------------------------------------------------------------------

    sealed class CountingEncoder(IFrozenEncoder inner) : IFrozenEncoder
    {
        public int Images;
        public string Kind => inner.Kind;
        public int FeatureDim => inner.FeatureDim;
        public int Stride => inner.Stride;
        public FrozenFeatures Encode(Tensor images) { Images += (int)images.shape[0]; return inner.Encode(images); }
    }

    [Fact]
    public void SecondExtractionReusesTheCache()
    {
        var data = new ImageFolder(AutoencoderTrainingTests.FashionMnist);
        using var dino = TinyDino();
        string dir = Reference.TempDir();
        var counting = new CountingEncoder(dino);
        var ex = new FeatureExtractor(counting, "dinov3_swiglu.pth");
        int progressCalls = 0;
        var opts = new ExtractionOptions { BatchSize = 16, CacheDir = dir, Progress = (done, total) => { progressCalls++; Assert.Equal(40, total); } };

        using var first = ex.ExtractVectors(data, 32, opts);
        Assert.False(first.FromCache);
        Assert.Equal(40, counting.Images);
        Assert.Equal(3, progressCalls);
        Assert.True(File.Exists(first.CachePath));

        using var second = ex.ExtractVectors(data, 32, opts);
        Assert.True(second.FromCache);
        Assert.Equal(40, counting.Images);          // the encoder did not run again
        Assert.Equal(3, progressCalls);
        Assert.Equal(first.CachePath, second.CachePath);
        Assert.True(Reference.Same(first.Features, second.Features));
        Assert.True(Reference.Same(first.Labels!, second.Labels!));

        // Another resolution, feature kind or network is another cache entry.
        using var other = ex.ExtractVectors(data, 48, opts);
        Assert.False(other.FromCache);
        Assert.Equal(80, counting.Images);
        using var grids = ex.ExtractGrids(data, 32, opts);
        Assert.False(grids.FromCache);
        Assert.Equal(new long[] { 40, 64, 2, 2 }, grids.Features.shape);

        // With the module itself, a change of weights changes the key.
        var direct = new FeatureExtractor(dino, "dinov3_swiglu.pth");
        using var a = direct.ExtractVectors(data, 32, opts);
        Assert.False(a.FromCache);
        using var b = direct.ExtractVectors(data, 32, opts);
        Assert.True(b.FromCache);
        Assert.Equal(40, direct.EncodedImages);
        using (torch.no_grad()) dino.parameters().First().add_(1e-3);
        using var c = direct.ExtractVectors(data, 32, opts);
        Assert.False(c.FromCache);
        Assert.Equal(80, direct.EncodedImages);
        Assert.Equal(5, Directory.GetFiles(dir, "*.safetensors").Length);
    }

    // ---- segmentation --------------------------------------------------------------------------

    static readonly float[][] ShapeColours =
    {
        new[] { 0.9f, 0.15f, 0.1f },   // class 1: red discs
        new[] { 0.1f, 0.8f, 0.2f },    // class 2: green rectangles
        new[] { 0.15f, 0.25f, 0.95f }, // class 3: blue discs
    };

    /// <summary>
    /// Writes <paramref name="count"/> synthetic images (1-2 coloured shapes on a grey noise background) and
    /// label maps (0 = background, 1..3 = shape class, 255 = a 2-pixel band around each shape's edge).
    /// </summary>
    static void WriteSyntheticSegmentation(string root, int count, int size, int seed)
    {
        Directory.CreateDirectory(Path.Combine(root, "images"));
        Directory.CreateDirectory(Path.Combine(root, "labels"));
        var rng = new Random(seed);
        var g = new Generator((ulong)seed);
        using var yy = torch.arange(size, dtype: ScalarType.Float32).view(size, 1).expand(size, size);
        using var xx = torch.arange(size, dtype: ScalarType.Float32).view(1, size).expand(size, size);
        for (int i = 0; i < count; i++)
        {
            using var scope = torch.NewDisposeScope();
            var image = torch.rand(new long[] { 1, size, size }, generator: g).expand(3, size, size) * 0.6 + 0.2;
            image = image + torch.randn(new long[] { 3, size, size }, generator: g) * 0.05;
            var label = torch.zeros(new long[] { size, size }, dtype: ScalarType.Int64);
            int shapes = 1 + rng.Next(2);
            for (int s = 0; s < shapes; s++)
            {
                int cls = 1 + rng.Next(3);
                double cy = rng.Next(size / 5, size - size / 5), cx = rng.Next(size / 5, size - size / 5);
                double r = rng.Next(size / 7, size / 4);
                Tensor dist;   // signed distance-like: < 0 inside
                if (cls == 2)
                {
                    double hy = r * (0.7 + 0.6 * rng.NextDouble()), hx = r * (0.7 + 0.6 * rng.NextDouble());
                    dist = torch.maximum((yy - cy).abs() - hy, (xx - cx).abs() - hx);
                }
                else dist = ((yy - cy).square() + (xx - cx).square()).sqrt() - r;
                var inside = dist.lt(0);
                var band = dist.abs().lt(2);
                var colour = torch.tensor(ShapeColours[cls - 1]).view(3, 1, 1) + torch.randn(new long[] { 3, size, size }, generator: g) * 0.05;
                image = torch.where(inside.unsqueeze(0), colour, image);
                label = label.masked_fill(inside, cls).masked_fill(band, 255);
            }
            string stem = $"{i:D3}";
            ImageFiles.SavePng(image.clamp(0, 1), Path.Combine(root, "images", stem + ".png"), (0, 1));
            ImageFiles.SavePng(label.to(ScalarType.Byte), Path.Combine(root, "labels", stem + ".png"));
        }
    }

    [Fact]
    public void SegmentationProbeOnSyntheticShapesConverges()
    {
        var sw = Stopwatch.StartNew();
        const int size = 128;
        string root = Reference.TempDir();
        WriteSyntheticSegmentation(Path.Combine(root, "train"), 48, size, seed: 1);
        WriteSyntheticSegmentation(Path.Combine(root, "val"), 16, size, seed: 2);
        var train = new SegmentationFolder(Path.Combine(root, "train"));
        var val = new SegmentationFolder(Path.Combine(root, "val"));
        Assert.Equal(4, train.InferNumClasses());
        using var dino = TinyDino();
        var ex = new FeatureExtractor(dino, "dinov3_swiglu.pth");
        using var ft = ex.ExtractGrids(train, size);
        using var fv = ex.ExtractGrids(val, size);
        Assert.Equal(new long[] { 48, 64, 8, 8 }, ft.Features.shape);
        using var yt = train.Labels(size);
        using var yv = val.Labels(size);
        log.WriteLine($"data + features {sw.Elapsed.TotalSeconds:F1} s; ignore pixels {yv.eq(255).to(ScalarType.Float32).mean().item<float>():P1}");

        // Trivial baseline: the majority class everywhere.
        var baseline = new SegmentationMetrics(4);
        using (var bg = torch.zeros_like(yv)) baseline.Update(bg, yv);

        var cfg = new SegmentationProbeConfig { Epochs = 40, BatchSize = 8, LearningRate = 1e-2, Seed = 1 };
        var r = SegmentationProbe.TrainAndEvaluate(ft.Features, yt, fv.Features, yv, 4, cfg);
        log.WriteLine($"baseline (all background): {baseline}");
        log.WriteLine($"probe: {r.Validation}; IoU per class {string.Join(" ", r.Validation.ClassIoU.Select(v => v.ToString("F3")))}");
        log.WriteLine($"loss {string.Join(" ", r.History.Where((_, i) => i % 5 == 0 || i == r.History.Count - 1).Select(e => e.Loss.ToString("F3")))}; {sw.Elapsed.TotalSeconds:F1} s");
        Assert.True(r.History[^1].Loss < 0.5 * r.History[0].Loss, "training loss should fall");
        Assert.True(r.Validation.MeanIoU > baseline.MeanIoU + 0.3, $"mIoU {r.Validation.MeanIoU:P1} vs baseline {baseline.MeanIoU:P1}");
    }

    // ---- segmentation folder -------------------------------------------------------------------

    [Fact]
    public void SegmentationFolderPairsByStemAndChecksLabels()
    {
        string root = Reference.TempDir();
        Directory.CreateDirectory(Path.Combine(root, "images", "training"));
        Directory.CreateDirectory(Path.Combine(root, "annotations", "training"));
        using var img = torch.rand(3, 20, 30);
        using var label = torch.zeros(new long[] { 20, 30 }, dtype: ScalarType.Byte);
        label.narrow(1, 15, 15).fill_(2);
        label[0, 0] = torch.tensor((byte)255);
        ImageFiles.SavePng(img, Path.Combine(root, "images", "training", "b.png"), (0, 1));
        ImageFiles.SavePng(img, Path.Combine(root, "images", "training", "a.png"), (0, 1));
        ImageFiles.SavePng(label, Path.Combine(root, "annotations", "training", "a.png"));
        ImageFiles.SavePng(label, Path.Combine(root, "annotations", "training", "b.png"));
        var ds = new SegmentationFolder(root, "training");
        Assert.Equal(2, ds.Count);
        Assert.EndsWith(Path.Combine("annotations", "training", "a.png"), ds.LabelFiles[0]);
        Assert.Equal(3, ds.InferNumClasses());
        var (x, y) = ds.CenterBatch(new[] { 0, 1 }, 10);
        Assert.Equal(new long[] { 2, 3, 10, 10 }, x.shape);
        Assert.Equal(new long[] { 2, 10, 10 }, y.shape);
        Assert.Equal(ScalarType.Int64, y.dtype);
        // 20x30 -> 10x15, centre crop columns 2..11: label 2 from original column 15 = new column 7.5.
        Assert.Equal(0L, y[0, 5, 0].item<long>());
        Assert.Equal(2L, y[0, 5, 9].item<long>());

        // A colour label map and a missing label are errors.
        using var colour = torch.rand(3, 20, 30);
        ImageFiles.SavePng(colour, Path.Combine(root, "annotations", "training", "b.png"), (0, 1));
        Assert.Contains("not greyscale", Assert.Throws<SvgdException>(() => ds.Label(1)).Message);
        File.Delete(Path.Combine(root, "annotations", "training", "b.png"));
        Assert.Contains("no label PNG", Assert.Throws<SvgdException>(() => new SegmentationFolder(root, "training")).Message);
    }
}
