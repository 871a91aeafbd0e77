using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class AutoencoderParityTests
{
    const string Case = "svg_autoencoder";
    readonly ITestOutputHelper _out;

    public AutoencoderParityTests(ITestOutputHelper output) => _out = output;

    static SvgAutoencoderConfig ReferenceConfig(AlignmentMode? mode = null)
    {
        var cfg = ConfigJson.Load<SvgAutoencoderConfig>(Reference.File_(Case + ".json"));
        return mode is { } m ? cfg with { Alignment = cfg.Alignment with { Mode = m } } : cfg;
    }

    static SvgAutoencoder LoadReference(SvgAutoencoderConfig cfg) =>
        SvgAutoencoderCheckpoint.Load(Reference.File_(Case + ".ckpt"), cfg);

    void Check(Tensor expected, Tensor actual, string what, double tol = 1e-4)
    {
        _out.WriteLine($"{what}: max abs error {Reference.MaxAbs(actual, expected):g3}");
        Reference.Close(expected, actual, tol, what);
    }

    [Fact]
    public void BatchModeMatchesReference()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        using var model = LoadReference(ReferenceConfig());
        Assert.Equal(AlignmentMode.Batch, model.Config.Alignment.Mode);
        using var _ = torch.no_grad();

        Check(io["image_dino"], SvgAutoencoder.ToEncoderInput(io["image"]), "image_dino");
        using var e = model.EncodeDetailed(io["image_dino"]);
        Check(io["dino_patch"], e.Semantic, "dino_patch");
        Check(io["residual_raw"], e.ResidualRaw, "residual_raw");
        Check(io["residual_aligned"], e.Residual, "residual_aligned");
        Check(io["latent"], e.Latent, "latent");
        Check(io["latent_first_alone"], model.Encode(io["image_dino"].narrow(0, 0, 1)), "latent_first_alone");
        Check(io["reconstruction"], model.Decode(io["latent"]), "reconstruction (reference latent)");
        Check(io["reconstruction"], model.Decode(e.Latent), "reconstruction (own latent)");
    }

    [Fact]
    public void StoredModeIsBatchIndependent()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        var images = io["image_dino"];
        // The reference itself is batch dependent: the first image's latent changes without its batch-mates.
        Assert.True(Reference.MaxAbs(io["latent"].narrow(0, 0, 1), io["latent_first_alone"]) > 1e-3);

        using var model = LoadReference(ReferenceConfig(AlignmentMode.Stored));
        using var _ = torch.no_grad();
        Assert.False(model.Alignment.HasStoredStatistics);
        Assert.Throws<SvgdException>(() => model.Encode(images));

        // Statistics taken from exactly this batch reproduce the batch-mode latent of this batch ...
        model.CalibrateAlignment(new[] { images });
        var batch = model.Encode(images);
        Check(io["latent"], batch, "stored mode, calibrated on the batch");

        // ... and then each image's latent is the same alone or in any batch.
        var alone = model.Encode(images.narrow(0, 0, 1));
        Check(batch.narrow(0, 0, 1), alone, "first image alone vs in batch", 1e-5);
        var reordered = model.Encode(torch.cat(new[] { images.narrow(0, 2, 1), images.narrow(0, 0, 1) }, 0));
        Check(batch.narrow(0, 0, 1), reordered.narrow(0, 1, 1), "first image after the third", 1e-5);
        Check(batch.narrow(0, 2, 1), reordered.narrow(0, 0, 1), "third image before the first", 1e-5);

        // The statistics travel with the model.
        string dir = Reference.TempDir();
        string path = Path.Combine(dir, "svg_ae_stored.safetensors");
        SvgAutoencoderCheckpoint.Save(model, path);
        using var reloaded = SvgAutoencoderCheckpoint.Load(path, ReferenceConfig(AlignmentMode.Stored));
        Assert.True(reloaded.Alignment.HasStoredStatistics);
        Check(alone, reloaded.Encode(images.narrow(0, 0, 1)), "reloaded stored statistics", 1e-6);
        Directory.Delete(dir, true);
    }

    [Fact]
    public void FrozenEncoderCanComeFromASeparateFile()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        var cfg = ReferenceConfig();
        using var model = LoadReference(cfg);
        string dir = Reference.TempDir();
        string dinoPath = Path.Combine(dir, "dino.safetensors"), aePath = Path.Combine(dir, "ae.safetensors");
        Dinov3Checkpoint.Save((DinoVisionTransformer)model.SemanticEncoder, dinoPath);
        SafeTensors.Save(aePath, model.state_dict().Where(kv => !kv.Key.StartsWith("encoder.")));

        var ex = Assert.Throws<SvgdException>(() => SvgAutoencoderCheckpoint.Load(aePath, cfg));
        Assert.Contains("encoder.*", ex.Message);
        using var split = SvgAutoencoderCheckpoint.Load(aePath, cfg, dinoPath);
        using var _ = torch.no_grad();
        Check(io["latent"], split.Encode(io["image_dino"]), "latent with a separate DINOv3 file");
        Directory.Delete(dir, true);
    }

    [Fact]
    public void ResidualMaskingOnlyInTraining()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        // No alignment, so the masked residual is visible as it is.
        var cfg = ReferenceConfig(AlignmentMode.None) with { MaskRatio = 1.0 };
        using var model = LoadReference(cfg);
        using var _ = torch.no_grad();
        using (var eval = model.EncodeDetailed(io["image_dino"]))
            Check(eval.ResidualRaw, eval.Residual, "eval: residual unmasked", 0);
        model.train();
        using (var train = model.EncodeDetailed(io["image_dino"]))
            Check(model.MaskToken.expand_as(train.Residual), train.Residual, "train: residual masked", 0);
    }

    [Fact]
    public void TrainingFeedsTheStoredStatistics()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        using var model = LoadReference(ReferenceConfig(AlignmentMode.Stored) with { MaskRatio = 0 });
        using var _ = torch.no_grad();
        model.train();
        using var e = model.EncodeDetailed(io["image_dino"]);
        Assert.True(model.Alignment.HasStoredStatistics);
        var (sm, ss) = DistributionAlignment.Statistics(e.Semantic);
        var (rm, rs) = DistributionAlignment.Statistics(e.ResidualRaw);
        var stored = model.Alignment.Stored;
        Assert.Equal(sm.item<float>(), stored.SemanticMean, 6);
        Assert.Equal(ss.item<float>(), stored.SemanticStd, 6);
        Assert.Equal(rm.item<float>(), stored.ResidualMean, 6);
        Assert.Equal(rs.item<float>(), stored.ResidualStd, 6);
    }

    [Fact]
    public void ReleasedPresetHasThePublishedSizes()
    {
        var cfg = SvgAutoencoderPresets.Get("svg-dinov3-vits16plus").Validate("preset");
        Assert.Equal(392, cfg.LatentChannels);
        Assert.Equal(16, cfg.ResidualVit.GridSize);
        static long Count(nn.Module m) => m.parameters().Sum(p => p.numel());
        using var residual = new ResidualEncoder(cfg.ResidualVit);
        using var decoder = new Decoder(cfg.Decoder);
        long r = Count(residual), d = Count(decoder);
        _out.WriteLine($"residual ViT {r:N0} parameters, decoder {d:N0}");
        Assert.InRange(r, 10_500_000, 11_500_000);   // ~11M in the paper
        Assert.InRange(d, 42_000_000, 44_500_000);   // ~43M
    }

    [Theory]
    [InlineData("dinov3_swiglu.pth", "DINOv3 encoder")]
    [InlineData("dinov3_mlp.hf.safetensors", "DINOv3 encoder")]
    [InlineData("svg_dit.pt", "diffusion transformer")]
    public void OtherModelTypeIsRejected(string file, string guess)
    {
        var ex = Assert.Throws<SvgdException>(() => SvgAutoencoderCheckpoint.Load(Reference.File_(file), ReferenceConfig()));
        _out.WriteLine(ex.Message);
        Assert.Contains("not an SVG autoencoder checkpoint", ex.Message);
        Assert.Contains(guess, ex.Message);
    }

    [Fact]
    public void WrongLatentChannelsAreRejected()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new SvgAutoencoder(ReferenceConfig());
        var ex = Assert.Throws<SvgdException>(() => model.Decode(torch.zeros(1, 71, 4, 4)));
        _out.WriteLine(ex.Message);
        Assert.Contains("72", ex.Message);
        Assert.Contains("71", ex.Message);
    }
}
