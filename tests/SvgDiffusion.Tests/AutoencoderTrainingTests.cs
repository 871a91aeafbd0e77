using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class AutoencoderTrainingTests(ITestOutputHelper log)
{
    internal static string FashionMnist => Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist");

    /// <summary>The reference case's small architecture (64 px, 72 channels), its frozen DINOv3, fresh residual ViT and decoder.</summary>
    internal static SvgAutoencoder TinyAutoencoder(long seed)
    {
        var cfg = ConfigJson.Load<SvgAutoencoderConfig>(Reference.File_("svg_autoencoder.json"));
        var dino = Dinov3Checkpoint.Load(Reference.File_("svg_autoencoder.ckpt"), cfg.Dino, "state_dict", "encoder.");
        torch.manual_seed(seed);
        return new SvgAutoencoder(cfg, dino);
    }

    static double EvalL1(AutoencoderTrainer t)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        t.Model.Module.eval();
        var x = t.Data.CenterBatch(Enumerable.Range(0, t.Data.Count), t.ImageSize);
        var rec = t.Model.Decode(t.Model.EncodeImages(x));
        return (x - rec).abs().mean().item<float>();
    }

    [Fact]
    public void ReconstructionLossFallsOnRealImages()
    {
        var data = new ImageFolder(FashionMnist);
        Assert.Equal(10, data.ClassNames.Count);
        using var model = TinyAutoencoder(1);
        var cfg = new AutoencoderTrainingConfig { BatchSize = 8, LearningRate = 1e-3, DiscStart = 30, Seed = 3 };
        using var trainer = new AutoencoderTrainer(model, data, cfg);
        double before = EvalL1(trainer);
        AutoencoderStepResult? last = null;
        for (int i = 0; i < 40; i++) last = trainer.TrainStep();
        double after = EvalL1(trainer);
        log.WriteLine($"eval L1 {before:F4} -> {after:F4}; last step {last}");
        Assert.True(after < 0.75 * before, $"L1 should fall well below its start: {before:F4} -> {after:F4}");
        Assert.True(last!.DiscriminatorLoss > 0 && last.AdaptiveWeight > 0, "the GAN terms are on after disc_start");
        Assert.True(model.Alignment.HasStoredStatistics, "training keeps running alignment statistics");
    }

    [Fact]
    public void ResumedRunEqualsUninterruptedRun()
    {
        var data = new ImageFolder(FashionMnist);
        var cfg = new AutoencoderTrainingConfig { BatchSize = 4, LearningRate = 1e-3, DiscStart = 2, Seed = 5 };
        string dir = Reference.TempDir();

        using var straight = new AutoencoderTrainer(TinyAutoencoder(7), data, cfg);
        for (int i = 0; i < 5; i++) straight.TrainStep();

        using (var first = new AutoencoderTrainer(TinyAutoencoder(7), data, cfg))
        {
            for (int i = 0; i < 3; i++) first.TrainStep();
            first.Save(Path.Combine(dir, "run.safetensors"));
        }
        using var resumed = AutoencoderTrainer.Resume(Path.Combine(dir, "run.safetensors"), data);
        Assert.Equal(3, resumed.Step);
        for (int i = 0; i < 2; i++) resumed.TrainStep();

        var a = straight.Model.Module.state_dict();
        var b = resumed.Model.Module.state_dict();
        var differing = a.Where(kv => !Reference.Same(kv.Value, b[kv.Key])).Select(kv => $"{kv.Key} ({Reference.MaxAbs(kv.Value, b[kv.Key]):g3})").ToList();
        Assert.True(differing.Count == 0, "differ after resume: " + string.Join(", ", differing));
        var da = straight.Discriminator.state_dict();
        var db = resumed.Discriminator.state_dict();
        foreach (var (k, t) in da) Assert.True(Reference.Same(t, db[k]), $"discriminator {k} differs after resume");

        // The training checkpoint is also a plain autoencoder file.
        using var reloaded = SvgAutoencoderCheckpoint.Load(Path.Combine(dir, "run.safetensors"));
        Assert.Equal(ConfigJson.Serialize(((SvgAutoencoder)straight.Model).Config), ConfigJson.Serialize(reloaded.Config));
    }
}

public class FreshModelTests
{
    [Fact]
    public void FreshDecoderNormsStartAtIdentity()
    {
        // Guards against TorchSharp's uninitialised GroupNorm parameters.
        using var decoder = new Decoder(new DecoderConfig { Ch = 32, ChMult = new[] { 1, 2 }, NumResBlocks = 1, AttnResolutions = new[] { 8 }, ZChannels = 16, Resolution = 16 });
        foreach (var (name, p) in decoder.named_parameters().Where(p => p.name.Contains("norm")))
        {
            float expected = name.EndsWith("weight") ? 1f : 0f;
            Assert.True(torch.eq(p, expected).all().item<bool>(), $"{name} is not initialised to {expected}");
        }
        using var _ = torch.no_grad();
        using var y = decoder.Forward(torch.randn(2, 16, 8, 8) * 5);
        Assert.True(torch.isfinite(y).all().item<bool>());
    }

    [Fact]
    public void DecoderGivesTheSameImagesInChunksAndChunksOnlyWithoutAutograd()
    {
        using var scope = torch.NewDisposeScope();
        torch.manual_seed(4);
        using var decoder = new Decoder(new DecoderConfig { Ch = 32, ChMult = new[] { 1, 2 }, NumResBlocks = 1, AttnResolutions = new[] { 8 }, ZChannels = 16, Resolution = 16 });
        decoder.eval();
        var z = torch.randn(5, 16, 8, 8);
        // 32 channels at 16x16 in fp32: 32 KiB per image
        decoder.ChunkBytes = 2 * 32 * 16 * 16 * 4;
        Assert.Equal(2, decoder.ChunkSize(z));
        Tensor chunked, whole;
        using (torch.inference_mode())
        {
            chunked = decoder.Forward(z);
            decoder.ChunkBytes = 0;
            Assert.Equal(5, decoder.ChunkSize(z));
            whole = decoder.Forward(z);
        }
        Assert.Equal(whole.shape, chunked.shape);
        Assert.True((whole - chunked).abs().max().item<float>() < 1e-5);

        // The released decoder at 256 px: two images per chunk in fp32, four in bf16.
        using var released = new Decoder(new DecoderConfig());
        var latent = torch.zeros(8, 392, 16, 16);
        Assert.Equal(2, released.ChunkSize(latent));
        released.to(ScalarType.BFloat16);
        Assert.Equal(4, released.ChunkSize(latent));
    }
}
