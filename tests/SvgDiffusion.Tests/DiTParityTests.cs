using System.Text.Json.Nodes;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

public class DiTParityTests(ITestOutputHelper log)
{
    const string Case = "svg_dit";

    static DiTConfig ReferenceConfig() => ConfigJson.Load<DiTConfig>(Reference.File_(Case + ".json"), "model");

    static DiT LoadReference() => DiTCheckpoint.Load(Reference.File_(Case + ".pt"), ReferenceConfig());

    void Check(Tensor expected, Tensor actual, double tol, string what)
    {
        log.WriteLine($"{what}: max abs error {Reference.MaxAbs(actual, expected):g3}");
        Reference.Close(expected, actual, tol, what);
    }

    [Fact]
    public void ConfigLoadsFromReferenceJson()
    {
        var cfg = ReferenceConfig();
        Assert.Equal(new DiTConfig
        {
            InputSize = 16, PatchSize = 1, InChannels = 12, HiddenSize = 64, Depth = 2, NumHeads = 4, MlpRatio = 4.0,
            ClassDropoutProb = 0.1, NumClasses = 10, LearnSigma = true, QkNorm = true,
        }, cfg);
        Assert.Equal(24, cfg.OutChannels);
        Assert.Equal(11, cfg.EmbeddingRows);
        Assert.Equal(72, DiTPresets.Get("SVG-XL").HeadDim);
        Assert.Equal((24, 1024, 16), (DiTPresets.Get("svg-l").Depth, DiTPresets.Get("svg-l").HiddenSize, DiTPresets.Get("svg-l").NumHeads));
        foreach (var name in DiTPresets.Names) DiTPresets.Get(name).Validate(name);
        Assert.Throws<SvgdException>(() => DiTPresets.Get("svg-xxl"));
        Assert.Throws<SvgdException>(() => (cfg with { NumHeads = 5 }).Validate("test"));
    }

    [Fact]
    public void ForwardMatchesReference()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        using var model = LoadReference();
        using var _ = torch.no_grad();
        Check(io["out"], model.Forward(io["x"], io["t"], io["y"]), 1e-5, "out");
        // The stored table is the formula's, so a computed table for the same grid gives the same output.
        Check(model.state_dict()["pos_embed"], SinCosPositionEmbedding.Create(64, 16, 16).unsqueeze(0), 0, "pos_embed");
        var latent = DiT.TokensToLatent(io["x"], 16, 16);
        Check(DiT.TokensToLatent(io["out"], 16, 16), model.ForwardLatent(latent, io["t"], io["y"]), 1e-5, "out from latents");
        Check(io["out"].narrow(2, 0, 12), model.Velocity(io["x"], io["t"], io["y"]), 1e-5, "velocity");
    }

    [Fact]
    public void TrainingLossMatchesReference()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        using var model = LoadReference();
        using var _ = torch.no_grad();
        using var loss = new RectifiedFlow(0.4).Loss(model, io["train.x1"], io["train.z0"], io["train.t_uniform"], io["train.y"]);
        Check(io["train.loss"].reshape(), loss.Loss, 1e-5, "train.loss");
        Check(io["train.mse"], loss.Mse, 1e-5, "train.mse");
    }

    [Fact]
    public void ScheduleMatchesReference()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        Check(io["schedule.t25_shift0.15"], RectifiedFlow.Schedule(25, 0.15), 1e-7, "schedule.t25_shift0.15");
        Check(torch.linspace(0, 1, 7), RectifiedFlow.Schedule(6, 1.0), 0, "unshifted schedule");
        Assert.Throws<SvgdException>(() => RectifiedFlow.Schedule(0, 0.15));
    }

    // Listed here rather than read from the json so that a missing reference file fails these tests
    // instead of leaving no cases to run; SampleRunsAreAllCovered keeps the list in step with the json.
    static readonly string[] SampleNames = { "euler5_cfg1.5_constant", "heun3_cfg4_constant", "euler4_cfg1.5_cfgstar", "euler6_nocfg_shift1" };

    static JsonArray SampleRunsInJson() =>
        JsonNode.Parse(File.ReadAllText(Reference.File_(Case + ".json")))!["samples"]!.AsArray();

    [Fact]
    public void SampleRunsAreAllCovered() =>
        Assert.Equal(SampleNames.Order(), SampleRunsInJson().Select(r => r!["name"]!.GetValue<string>()).Order());

    [Theory]
    [InlineData("euler5_cfg1.5_constant")]
    [InlineData("heun3_cfg4_constant")]
    [InlineData("euler4_cfg1.5_cfgstar")]
    [InlineData("euler6_nocfg_shift1")]
    public void SamplesMatchReference(string name)
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        var run = SampleRunsInJson().Single(r => r!["name"]!.GetValue<string>() == name)!;
        int steps = run["steps"]!.GetValue<int>();
        double cfg = run["cfg"]!.GetValue<double>();
        var sampler = Sampler.Create(run["mode"]!.GetValue<string>(), steps, run["timestep_shift"]!.GetValue<double>());
        var guidance = GuidanceSchedule.Parse(cfg, run["cfg_mode"]!.GetValue<string>());
        using var model = LoadReference();
        using var _ = torch.no_grad();
        // The reference's unguided run passes no null labels.
        var nulls = cfg == 1.0 ? null : io["sample.null"];
        Check(io["sample." + name], sampler.Sample(model, io["sample.z"], io["sample.cond"], nulls, guidance), 1e-4, "sample." + name);
    }

    [Fact]
    public void SamplingIsDeterministicGivenTheSeed()
    {
        using var scope = torch.NewDisposeScope();
        using var model = LoadReference();
        using var _ = torch.no_grad();
        var labels = torch.tensor(new long[] { 1, 2 });
        var nulls = torch.full(2, model.NullLabel, dtype: ScalarType.Int64);
        var sampler = new EulerSampler(3);
        Tensor Run(long seed)
        {
            using var g = new Generator((ulong)seed);
            var z = Sampler.Noise(new long[] { 2, 256, 12 }, g);
            return sampler.Sample(model, z, labels, nulls, GuidanceSchedule.Parse(1.5, "cfg_star-1-0"));
        }
        Assert.True(Reference.Same(Run(7), Run(7)), "same seed, different samples");
        Assert.False(Reference.Same(Run(7), Run(8)), "different seeds, same samples");

        // Training randomness (times, noise and label dropout) follows the generator too.
        model.train();
        var x1 = torch.randn(4, 256, 12);
        var y = torch.tensor(new long[] { 0, 1, 2, 3 });
        float Loss(long seed)
        {
            using var g = new Generator((ulong)seed);
            using var l = new RectifiedFlow().RandomLoss(model, x1, y, g);
            return l.Loss.item<float>();
        }
        Assert.Equal(Loss(3), Loss(3));
        Assert.NotEqual(Loss(3), Loss(4));
        model.eval();
    }

    [Fact]
    public void SaveAndReloadRoundTrip()
    {
        using var scope = torch.NewDisposeScope();
        var io = Reference.Io(Case);
        // Without a config the architecture comes from the shapes; qk-norm widths give the head count.
        using var inferred = DiTCheckpoint.Load(Reference.File_(Case + ".pt"));
        Assert.Equal(ReferenceConfig(), inferred.Config);
        string path = Path.Combine(Reference.TempDir(), "dit.safetensors");
        DiTCheckpoint.Save(inferred, path);
        using var reloaded = DiTCheckpoint.Load(path);
        Assert.Equal(inferred.Config, reloaded.Config);
        using var _ = torch.no_grad();
        Assert.True(Reference.Same(inferred.Forward(io["x"], io["t"], io["y"]), reloaded.Forward(io["x"], io["t"], io["y"])));
        var ex = Assert.Throws<SvgdException>(() => DiTCheckpoint.Load(path, ReferenceConfig() with { Depth = 3 }));
        Assert.Contains("depth", ex.Message);
    }

    [Fact]
    public void DinoCheckpointIsRejectedClearly()
    {
        var ex = Assert.Throws<SvgdException>(() => DiTCheckpoint.Load(Reference.File_("dinov3_swiglu.pth")));
        log.WriteLine(ex.Message);
        Assert.Contains("dinov3_swiglu.pth", ex.Message);
        Assert.Contains("not an SVG diffusion transformer", ex.Message);
        Assert.Contains("DINOv3", ex.Message);
    }

    [Fact]
    public void RunsOnOtherGridSizes()
    {
        using var scope = torch.NewDisposeScope();
        using var model = LoadReference();
        using var _ = torch.no_grad();
        var latent = torch.randn(2, 12, 6, 10);
        var t = torch.tensor(new[] { 0.2f, 0.8f });
        var y = torch.tensor(new long[] { 3, 10 });
        var v = model.Velocity(latent, t, y);
        Assert.Equal(new long[] { 2, 12, 6, 10 }, v.shape);
        var tokens = DiT.LatentToTokens(latent);
        Check(DiT.LatentToTokens(v), model.Velocity(tokens, t, y, (6, 10)), 0, "tokens vs latents on a 6x10 grid");
        Assert.Throws<SvgdException>(() => model.Forward(tokens, t, y));                       // 60 tokens: not square
        Assert.Throws<SvgdException>(() => model.Forward(tokens, t, torch.tensor(new long[] { 3, 11 }), (6, 10)));
        var sample = new HeunSampler(2).Sample(model, latent, y, torch.full(2, 10L), GuidanceSchedule.Parse(2, "linear"));
        Assert.Equal(latent.shape, sample.shape);
    }

    [Fact]
    public void NewModelStartsAtZeroVelocity()
    {
        using var scope = torch.NewDisposeScope();
        using var model = new DiT(DiTPresets.Get("svg-tiny") with { InChannels = 8, NumClasses = 5 });
        using var _ = torch.no_grad();
        var o = model.Forward(torch.randn(2, 256, 8), torch.tensor(new[] { 0.1f, 0.9f }), torch.tensor(new long[] { 0, 5 }));
        Assert.Equal(new long[] { 2, 256, 16 }, o.shape);
        Assert.Equal(0.0, o.abs().max().item<float>());
    }

    [Fact]
    public void GuidanceModes()
    {
        Assert.Equal(1.5, GuidanceSchedule.Parse(1.5, "constant").WeightAt(0.1));
        var late = GuidanceSchedule.Parse(4, "late");
        Assert.Equal((1.0, 4.0), (late.WeightAt(0.3), late.WeightAt(0.7)));
        var early = GuidanceSchedule.Parse(4, "early-0.25");
        Assert.Equal((4.0, 1.0), (early.WeightAt(0.2), early.WeightAt(0.3)));
        Assert.Equal(2.5, GuidanceSchedule.Parse(4, "linear").WeightAt(0.5));
        var star = GuidanceSchedule.Parse(1.5, "cfg_star-2-0.5");
        Assert.True(star.OverridesStep(1));
        Assert.False(star.OverridesStep(2));
        Assert.Equal(0.5, star.OverrideFactor);
        Assert.False(GuidanceSchedule.Parse(1.0, "constant").IsActive(true));
        Assert.False(GuidanceSchedule.Parse(4.0, "constant").IsActive(false));
        foreach (var bad in new[] { "sometimes", "early-2", "cfg_star-1", "early-x" })
            Assert.Throws<SvgdException>(() => GuidanceSchedule.Parse(2, bad));
        Assert.Throws<SvgdException>(() => Sampler.Create("dpm", 10));
    }

    [Fact]
    public void GuidedSamplingBatchesConditionalAndUnconditional()
    {
        using var scope = torch.NewDisposeScope();
        var batches = new List<long>();
        VelocityField field = (x, t, y) =>
        {
            batches.Add(x.shape[0]);
            return y.to(ScalarType.Float32).view(-1, 1) * torch.ones_like(x);
        };
        var z = torch.zeros(3, 4);
        var cond = torch.tensor(new long[] { 1, 2, 3 });
        var nulls = torch.full(3, 10L);
        // v = v_u + w (v_c - v_u) = 10 + 2 (y - 10); the first step is zero-initialised.
        var x1 = new EulerSampler(4, 1.0).Sample(field, z, cond, nulls, GuidanceSchedule.Parse(2, "cfg_star-1-0"));
        Assert.Equal(new long[] { 6, 6, 6 }, batches);
        Check(torch.tensor(new[] { -8f, -6f, -4f }).view(3, 1).expand(3, 4) * 0.75f, x1, 1e-6, "toy guided sample");
        batches.Clear();
        new EulerSampler(2, 1.0).Sample(field, z, cond, nulls, GuidanceSchedule.None);
        Assert.Equal(new long[] { 3, 3 }, batches);
    }
}
