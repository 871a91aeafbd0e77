using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The Fashion-MNIST folder encoded once (with flips) by the tiny autoencoder, shared by the training tests.</summary>
public sealed class FashionLatents : IDisposable
{
    public static readonly LatentCacheOptions Options = new() { Flip = true, ImagesPerShard = 8, BatchSize = 8 };

    public ImageFolder Images { get; } = new(AutoencoderTrainingTests.FashionMnist);
    public SvgAutoencoder Autoencoder { get; } = AutoencoderTrainingTests.TinyAutoencoder(11);
    public string Directory { get; } = Reference.TempDir();
    public LatentCache Cache { get; }

    public FashionLatents() => Cache = new LatentCacheWriter(Autoencoder, Images, Directory, Options).Write();

    public void Dispose()
    {
        Cache.Dispose();
        Autoencoder.Dispose();
    }
}

public class DiTTrainingTests(FashionLatents data, ITestOutputHelper log) : IClassFixture<FashionLatents>
{
    /// <summary>A DiT for the tiny autoencoder's 4x4x72 latents and the 10 Fashion-MNIST classes.</summary>
    internal static readonly DiTConfig TinyDiT = new()
    {
        InputSize = 4, PatchSize = 1, InChannels = 72, HiddenSize = 64, Depth = 2, NumHeads = 4, MlpRatio = 4.0,
        ClassDropoutProb = 0.1, NumClasses = 10, LearnSigma = true, QkNorm = true,
    };

    static DiT NewDiT(long seed)
    {
        torch.manual_seed(seed);
        return new DiT(TinyDiT);
    }

    /// <summary>An exact copy: two models built after the same manual_seed may differ while other test classes draw from the global generator in parallel.</summary>
    internal static DiT CopyOf(DiT model)
    {
        var copy = new DiT(model.Config);
        StateDictLoader.Load(copy, model.state_dict(), "copy");
        return copy;
    }

    static readonly DiTTrainingConfig Fast = new() { BatchSize = 16, LearningRate = 1e-3, EmaDecay = 0.9, Seed = 3 };

    static void AssertSameWeights(IDictionary<string, Tensor> expected, IDictionary<string, Tensor> actual, string what)
    {
        Assert.Equal(expected.Keys.OrderBy(k => k), actual.Keys.OrderBy(k => k));
        var differing = expected.Where(kv => !Reference.Same(kv.Value, actual[kv.Key])).Select(kv => $"{kv.Key} ({Reference.MaxAbs(kv.Value, actual[kv.Key]):g3})").ToList();
        Assert.True(differing.Count == 0, $"{what} differ: {string.Join(", ", differing)}");
    }

    static Dictionary<string, Tensor> Snapshot(nn.Module m) => m.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

    [Fact]
    public void CacheWriterEncodesFlipsAndResumesPerShard()
    {
        string dir = Reference.TempDir();
        var progress = new List<(long Done, long Total)>();
        var writer = new LatentCacheWriter(data.Autoencoder, data.Images, dir, FashionLatents.Options);
        using (var cache = writer.Write((d, t) => progress.Add((d, t))))
        {
            Assert.Equal((5, 0), (writer.ShardsWritten, writer.ShardsSkipped));
            Assert.Equal(80, cache.Count);
            Assert.Equal(5, cache.ShardCount);
            Assert.Equal(new long[] { 72, 4, 4 }, cache.LatentShape);
            Assert.Equal(data.Images.ClassNames, cache.ClassNames);
            Assert.Equal(10, cache.NumClasses);
            var sources = cache.Sources();
            for (int i = 0; i < data.Images.Count; i++)
            {
                Assert.Equal(data.Images.Labels[i], cache.Label(2 * i));
                Assert.Equal(data.Images.Labels[i], cache.Label(2 * i + 1));
                string rel = Path.GetRelativePath(data.Images.Root, data.Images.Files[i]);
                Assert.Equal((rel, false), sources[2 * i]);
                Assert.Equal((rel, true), sources[2 * i + 1]);
            }
            Assert.Equal((80L, 80L), progress[^1]);
            Assert.True(progress.Zip(progress.Skip(1)).All(p => p.First.Done < p.Second.Done), "progress only grows");

            // Latents are the autoencoder's: originals as encoded in their batch of 8, flips (batch-independent DINO half) as encoded alone.
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            var images = data.Images.CenterBatch(Enumerable.Range(0, 8), 64);
            var z = data.Autoencoder.Encode(SvgAutoencoder.ToEncoderInput(images));
            var (cached, labels) = cache.Batch(Enumerable.Range(0, 8).Select(i => 2 * i).ToList());
            Reference.Close(z, cached, 1e-6, "cached latents");
            Assert.Equal(data.Images.Labels.Take(8).Select(l => (long)l), labels.data<long>().ToArray());
            var flipped = data.Autoencoder.Encode(SvgAutoencoder.ToEncoderInput(images.narrow(0, 0, 1).flip(3)));
            Reference.Close(flipped.narrow(1, 0, 64), cache.Batch(new[] { 1 }).Latents.narrow(1, 0, 64), 1e-4, "semantic half of a flipped latent");

            // Over the memory budget, rows are read from the files: the same values, in the order asked.
            using var fromFiles = LatentCache.Open(dir, memoryBudgetBytes: 0);
            Assert.False(fromFiles.InMemory);
            var order = new[] { 79, 3, 40, 3, 17 };
            Assert.True(Reference.Same(cache.Batch(order).Latents, fromFiles.Batch(order).Latents), "row reads equal whole-shard reads");
            Assert.Throws<SvgdException>(() => cache.Batch(new[] { 80 }));
        }

        string Shard(int s) => Path.Combine(dir, $"shard-{s:D5}.safetensors");
        var times = Enumerable.Range(0, 5).Select(s => File.GetLastWriteTimeUtc(Shard(s))).ToList();
        var shard2 = SafeTensors.Load(Shard(2));

        // A rerun finds everything complete.
        var again = new LatentCacheWriter(data.Autoencoder, data.Images, dir, FashionLatents.Options);
        again.Write().Dispose();
        Assert.Equal((0, 5), (again.ShardsWritten, again.ShardsSkipped));
        Assert.Equal(times, Enumerable.Range(0, 5).Select(s => File.GetLastWriteTimeUtc(Shard(s))));

        // A deleted shard is re-created alone, with the same contents.
        File.Delete(Shard(2));
        Assert.Throws<SvgdException>(() => LatentCache.Open(dir));
        var repair = new LatentCacheWriter(data.Autoencoder, data.Images, dir, FashionLatents.Options);
        repair.Write().Dispose();
        Assert.Equal((1, 4), (repair.ShardsWritten, repair.ShardsSkipped));
        foreach (int s in new[] { 0, 1, 3, 4 }) Assert.Equal(times[s], File.GetLastWriteTimeUtc(Shard(s)));
        var rewritten = SafeTensors.Load(Shard(2));
        Assert.True(Reference.Same(shard2["latents"], rewritten["latents"]) && Reference.Same(shard2["labels"], rewritten["labels"]), "the re-created shard equals the original");

        // A truncated shard is reported on open and re-encoded by the next run.
        var bytes = File.ReadAllBytes(Shard(3));
        File.WriteAllBytes(Shard(3), bytes[..(bytes.Length / 2)]);
        var ex = Assert.Throws<SvgdException>(() => LatentCache.Open(dir));
        Assert.Contains("shard-00003", ex.Message);
        var fix = new LatentCacheWriter(data.Autoencoder, data.Images, dir, FashionLatents.Options);
        fix.Write().Dispose();
        Assert.Equal((1, 4), (fix.ShardsWritten, fix.ShardsSkipped));

        // Other options into the same folder: refused, unless overwriting.
        var other = FashionLatents.Options with { Flip = false, ImagesPerShard = 10 };
        ex = Assert.Throws<SvgdException>(() => new LatentCacheWriter(data.Autoencoder, data.Images, dir, other).Write());
        Assert.Contains("other images, options or encoder weights", ex.Message);
        using (var replaced = new LatentCacheWriter(data.Autoencoder, data.Images, dir, other with { Overwrite = true, BFloat16 = true }).Write())
        {
            Assert.Equal(40, replaced.Count);
            Assert.Equal("bfloat16", replaced.Index.Dtype);
            Assert.Equal(ScalarType.Float32, replaced.Batch(new[] { 0, 39 }).Latents.dtype);
            Assert.False(File.Exists(Shard(4)), "the old cache's extra shard is gone");
        }

        Assert.Throws<SvgdException>(() => LatentCache.Open(Reference.TempDir()));
    }

    [Fact]
    public void StatisticsAccumulateAcrossDisposeScopes()
    {
        var acc = new LatentStatistics.Accumulator();
        using var all = torch.randn(new long[] { 6, 5, 3, 3 }, generator: new Generator(1)) * 2 + 1;
        for (int b = 0; b < 3; b++)
        {
            using var scope = torch.NewDisposeScope();
            acc.Add(all.narrow(0, 2 * b, 2));
        }
        LatentStatistics stats;
        using (torch.NewDisposeScope()) stats = acc.Result();
        using (stats)
        {
            using var tokens = all.permute(0, 2, 3, 1).reshape(-1, 5).to(ScalarType.Float64);
            Reference.Close(tokens.mean(new long[] { 0 }).reshape(1, 1, 5), stats.Mean, 1e-5, "mean");
            Reference.Close(tokens.std(new long[] { 0 }).reshape(1, 1, 5), stats.Std, 1e-5, "std");
        }
    }

    [Fact]
    public void FreshDiTIsFiniteWithUnitNorms()
    {
        using var model = NewDiT(1);
        foreach (var (name, p) in model.named_parameters().Where(p => p.name.Contains("_norm.")))
        {
            float expected = name.EndsWith("weight") ? 1f : 0f;
            Assert.True(torch.eq(p, expected).all().item<bool>(), $"{name} is not initialised to {expected}");
        }
        foreach (var (name, p) in model.named_parameters())
            Assert.True(torch.isfinite(p).all().item<bool>(), $"{name} is not finite");
        using var _ = torch.no_grad();
        using var v = model.Velocity(torch.randn(2, 72, 4, 4), torch.rand(2), torch.tensor(new long[] { 0, 10 }));
        Assert.True(torch.isfinite(v).all().item<bool>());
    }

    [Fact]
    public void FlowLossFallsOnCachedLatents()
    {
        using var trainer = new DiTTrainer(NewDiT(1), data.Cache, Fast with { Steps = 60 });
        var all = Enumerable.Range(0, data.Cache.Count).ToList();
        double before = trainer.EvalLoss(all, seed: 7);
        var losses = trainer.Train();
        double after = trainer.EvalLoss(all, seed: 7);
        double emaAfter = trainer.EvalLoss(all, seed: 7, ema: true);
        double first = losses.Take(5).Average(), last = losses.TakeLast(5).Average();
        log.WriteLine($"eval loss {before:F4} -> {after:F4} (EMA {emaAfter:F4}); training loss first 5 {first:F4}, last 5 {last:F4}");
        Assert.Equal(60, losses.Count);
        Assert.Equal(60, trainer.Step);
        Assert.True(losses.All(double.IsFinite));
        Assert.True(after < 0.8 * before, $"eval loss should fall: {before:F4} -> {after:F4}");
        Assert.True(last < first, $"training loss should fall: {first:F4} -> {last:F4}");
        Assert.True(emaAfter < before, $"the EMA model should improve too: {before:F4} -> {emaAfter:F4}");
        trainer.Model.Dispose();
    }

    [Fact]
    public void ResumedRunEqualsUninterruptedRun()
    {
        string path = Path.Combine(Reference.TempDir(), "dit.safetensors");
        var cfg = Fast with { Steps = 6, GradClip = 0.5 };

        using var init = NewDiT(2);
        using var straight = new DiTTrainer(CopyOf(init), data.Cache, cfg);
        var straightLosses = straight.Train();

        Dictionary<string, Tensor> emaAtSave, modelAtSave;
        using (var first = new DiTTrainer(CopyOf(init), data.Cache, cfg))
        {
            for (int i = 0; i < 3; i++) first.TrainStep();
            first.Save(path);
            emaAtSave = Snapshot(first.Ema);
            modelAtSave = Snapshot(first.Model);
            first.Model.Dispose();
        }

        var info = DiTTrainer.ReadInfo(path);
        Assert.Equal(3, info.Step);
        Assert.Equal(TinyDiT, info.Model);
        Assert.Equal(cfg, info.Training);
        Assert.Equal(data.Cache.ClassNames, info.ClassNames);
        Assert.Equal(new long[] { 72, 4, 4 }, info.LatentShape);

        // The training checkpoint serves as a model file (EMA weights by default) and a statistics file.
        using (var ema = DiTCheckpoint.Load(path))
            AssertSameWeights(emaAtSave, ema.state_dict(), "EMA weights loaded from the training checkpoint");
        using (var raw = DiTCheckpoint.Load(path, section: "model"))
            AssertSameWeights(modelAtSave, raw.state_dict(), "raw weights loaded from the training checkpoint");
        using (var stats = DiTTrainer.ReadStatistics(path))
        using (var fromFile = LatentStatistics.Load(path))
        {
            Assert.True(Reference.Same(straight.Statistics.Mean, stats.Mean) && Reference.Same(straight.Statistics.Std, stats.Std));
            Assert.True(Reference.Same(stats.Std, fromFile.Std));
        }

        using var resumed = DiTTrainer.Resume(path, data.Cache);
        Assert.Equal(3, resumed.Step);
        var resumedLosses = resumed.Train();
        Assert.Equal(straightLosses.Skip(3), resumedLosses);
        AssertSameWeights(straight.Model.state_dict(), resumed.Model.state_dict(), "model weights");
        AssertSameWeights(straight.Ema.state_dict(), resumed.Ema.state_dict(), "EMA weights");
        // One more step each: equal only if the optimiser states (moments, step counts) match too.
        var a = straight.TrainStep();
        var b = resumed.TrainStep();
        Assert.Equal(a, b);
        AssertSameWeights(straight.Model.state_dict(), resumed.Model.state_dict(), "model weights one step later");

        var ex = Assert.Throws<SvgdException>(() => DiTTrainer.Resume(Path.Combine(data.Directory, "shard-00000.safetensors"), data.Cache));
        Assert.Contains("not a diffusion training checkpoint", ex.Message);
        straight.Model.Dispose();
    }

    /// <summary>Checkpoints written before the optimiser state was stored tensor by tensor hold it as one
    /// <c>save_state_dict</c> byte tensor under 'optimizer.dit': they resume exactly like the new layout.</summary>
    [Fact]
    public void CheckpointWithTheOldOptimizerBlobStillResumes()
    {
        const string key = "optimizer.dit";
        string dir = Reference.TempDir();
        string path = Path.Combine(dir, "new.safetensors"), old = Path.Combine(dir, "old.safetensors");
        using var init = NewDiT(4);
        using (var first = new DiTTrainer(CopyOf(init), data.Cache, Fast with { Steps = 5 }))
        {
            for (int i = 0; i < 2; i++) first.TrainStep();
            first.Save(path);
            first.Model.Dispose();
        }
        var header = SafeTensors.ReadHeader(path);
        Assert.Contains(key, header.Metadata.Keys);
        Assert.DoesNotContain(header.Tensors, t => t.Name == key);
        Assert.Contains(header.Tensors, t => t.Name == $"{key}.0.exp_avg_sq");

        var tensors = SafeTensors.Load(path).Where(kv => !kv.Key.StartsWith(key + ".", StringComparison.Ordinal)).ToDictionary(kv => kv.Key, kv => kv.Value);
        using (var probe = CopyOf(init))
        using (var opt = torch.optim.AdamW(probe.parameters().Where(p => p.requires_grad)))
        {
            using (var file = SafeTensors.Open(path)) RunCheckpoint.RestoreOptimizer(opt, file, key);
            tensors[key] = RunCheckpoint.OptimizerBlob(opt);
        }
        SafeTensors.Save(old, tensors, header.Metadata.Where(kv => kv.Key != key).ToDictionary(kv => kv.Key, kv => kv.Value));

        using var a = DiTTrainer.Resume(path, data.Cache);
        using var b = DiTTrainer.Resume(old, data.Cache);
        Assert.Equal(2, b.Step);
        Assert.Equal(a.Train(), b.Train());
        AssertSameWeights(a.Model.state_dict(), b.Model.state_dict(), "model weights");
        AssertSameWeights(a.Ema.state_dict(), b.Ema.state_dict(), "EMA weights");
    }

    [Fact]
    public void OnlineLatentsTrainLikeTheCache()
    {
        using var stats = data.Cache.ComputeStatistics();
        using var init = NewDiT(4);
        using var cached = new DiTTrainer(CopyOf(init), data.Cache, Fast with { Steps = 3 }, stats);
        using var online = new DiTTrainer(CopyOf(init), data.Cache.Batch, data.Cache.Count, Fast with { Steps = 3 }, stats, data.Cache.ClassNames);
        Assert.Equal(cached.Train(), online.Train());
        AssertSameWeights(cached.Model.state_dict(), online.Model.state_dict(), "weights");
        cached.Model.Dispose();
        online.Model.Dispose();
    }

    [Fact]
    public void SamplesAreDeterministic()
    {
        using var trainer = new DiTTrainer(NewDiT(5), data.Cache, Fast with { Steps = 5, EmaDecay = 0.5 });
        trainer.Train();
        var labels = new[] { 0, 3, 7, 9 };
        using var s1 = trainer.Sample(labels, steps: 5, cfg: 2.0, seed: 11);
        using var s2 = trainer.Sample(labels, steps: 5, cfg: 2.0, seed: 11);
        using var s3 = trainer.Sample(labels, steps: 5, cfg: 2.0, seed: 12);
        using var s4 = trainer.Sample(labels, steps: 5, cfg: 1.0, seed: 11);
        Assert.Equal(new long[] { 4, 72, 4, 4 }, s1.shape);
        Assert.True(torch.isfinite(s1).all().item<bool>());
        Assert.True(Reference.Same(s1, s2), "same seed, same samples");
        Assert.False(Reference.Same(s1, s3), "another seed, other samples");
        Assert.False(Reference.Same(s1, s4), "guidance changes the samples");

        // What a sampling command does with the checkpoint alone gives the same latents.
        string path = Path.Combine(Reference.TempDir(), "dit.safetensors");
        trainer.Save(path);
        using var ema = DiTCheckpoint.Load(path);
        using var stats = DiTTrainer.ReadStatistics(path);
        using var s5 = DiTTrainer.SampleLatents(ema, stats, labels, steps: 5, cfg: 2.0, seed: 11);
        Assert.True(Reference.Same(s1, s5), "samples from the loaded checkpoint equal the trainer's");
        Assert.Throws<SvgdException>(() => trainer.Sample(new[] { 10 }));
        trainer.Model.Dispose();
    }
}
