using SvgDiffusion.Studies;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>The study command's pipeline on a tiny budget: every stage runs, results land per arm, and finished arms are skipped.</summary>
public class StudyTests
{
    sealed class Recorder(Func<string, bool>? cancelAt = null, CancellationTokenSource? cts = null) : IStudyObserver
    {
        public List<string> Messages { get; } = new();
        public List<string> Stages { get; } = new();
        public void Message(string line) => Messages.Add(line);
        public void Stage(string description, long total, Action<Action<long>> body)
        {
            Stages.Add(description);
            if (cancelAt?.Invoke(description) == true) cts!.Cancel();
            body(_ => { });
        }
    }

    static StudyConfig Tiny(string root) => new StudyConfig
    {
        Name = "tiny",
        TrainImages = Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist"),
        TestImages = Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist"),
        ReferenceImages = Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist"),
        WorkDir = Path.Combine(root, "work"),
        ResultsDir = Path.Combine(root, "results"),
        Autoencoder = new StudyAutoencoderBudget { Steps = 2, BatchSize = 4, CheckpointEvery = 1 },
        Dit = new StudyDiTBudget { Steps = 4, BatchSize = 8, Checkpoints = new[] { 2, 4 }, CheckpointEvery = 2, CacheShardImages = 16 },
        Evaluation = new StudyEvaluation { Samples = 10, BatchSize = 10, Steps = 2, SweepSteps = new[] { 1, 2 }, SweepCfg = new[] { 1.0, 1.5 } },
        Probe = new StudyProbe { Epochs = 2 },
        Arms = new[]
        {
            new StudyArm { Name = "svg", Preset = "svg-resnet18-32px" },
            new StudyArm { Name = "svg-global", AutoencoderFrom = "svg", LatentNormalization = "global" },
            new StudyArm { Name = "vae", Preset = "vae-f8c4-32px" },
        },
    }.Validate("tiny study");

    [Fact]
    public void StudyRunsEveryStageAndResumeSkipsFinishedArms()
    {
        string root = Reference.TempDir();
        var config = Tiny(root);
        // First run: stopped when the VAE arm reaches its DiT, after the SVG arms have finished.
        using (var cts = new CancellationTokenSource())
        {
            var first = new Recorder(d => d.StartsWith("vae: DiT", StringComparison.Ordinal), cts);
            Assert.Throws<OperationCanceledException>(() => new Study(config, first).Run(cancel: cts.Token));
            Assert.True(File.Exists(Study.MetricsPath(config, "svg")));
            Assert.True(File.Exists(Study.MetricsPath(config, "svg-global")));
            Assert.False(File.Exists(Study.MetricsPath(config, "vae")));
            // The arm reusing another's autoencoder trains none of its own.
            Assert.DoesNotContain(first.Stages, s => s.StartsWith("svg-global: autoencoder", StringComparison.Ordinal));
        }

        // Second run: the finished arms are skipped, the VAE arm continues without retraining its autoencoder.
        var second = new Recorder();
        var results = new Study(config, second).Run();
        Assert.Equal(3, results.Count);
        Assert.Contains(second.Messages, m => m.StartsWith("svg: finished earlier", StringComparison.Ordinal));
        Assert.Contains(second.Messages, m => m.StartsWith("svg-global: finished earlier", StringComparison.Ordinal));
        Assert.DoesNotContain(second.Stages, s => s.StartsWith("svg", StringComparison.Ordinal));
        Assert.DoesNotContain(second.Stages, s => s.StartsWith("vae: autoencoder", StringComparison.Ordinal));
        Assert.Contains(second.Stages, s => s.StartsWith("vae: DiT", StringComparison.Ordinal));

        foreach (var r in results)
        {
            Assert.Equal(new[] { 2, 4 }, r.TrainingCurve.Select(p => p.TrainingStep));
            Assert.Equal(4, r.SamplingSweep.Count);
            foreach (var p in r.TrainingCurve.Concat(r.SamplingSweep))
            {
                Assert.True(double.IsFinite(p.FdEvaluator) && p.FdEvaluator >= 0, $"{r.Arm}: FD {p.FdEvaluator}");
                Assert.InRange(p.ClassAccuracy, 0, 1);
                Assert.InRange(p.Precision, 0, 1);
                Assert.InRange(p.Recall, 0, 1);
            }
            Assert.InRange(r.Probe.Top1, 0, 1);
            Assert.True(r.Reconstruction.Psnr > 0 && r.Reconstruction.Images == 40);
            Assert.Equal(4, r.Dit.Steps);
            Assert.True(File.Exists(Path.Combine(config.ResultsDir, r.Arm, "samples.png")));
            Assert.True(File.Exists(Path.Combine(config.ResultsDir, r.Arm, "reconstructions.png")));
        }
        Assert.Equal(new long[] { 136, 4, 4 }, results[0].LatentShape);
        Assert.Equal(new long[] { 4, 4, 4 }, results[2].LatentShape);
        Assert.Equal("global", results[1].LatentNormalization);
        // Same autoencoder, so the same reconstruction and probe numbers.
        Assert.Equal(results[0].Reconstruction.Psnr, results[1].Reconstruction.Psnr);
        // Stage times are known for a study that trained everything itself.
        Assert.All(results, r => Assert.NotNull(r.WallSeconds));
        foreach (var f in new[] { StudyReport.ResultsFile, StudyReport.TrainingPlot, StudyReport.SamplingPlot, StudyReport.SamplingCfgPlot, "baseline.json" })
            Assert.True(File.Exists(Path.Combine(config.ResultsDir, f)), f);
        string md = File.ReadAllText(Path.Combine(config.ResultsDir, StudyReport.ResultsFile));
        Assert.Contains("| svg-global |", md);

        // Third run without the work folder (another session: checkpoints are not committed): nothing is retrained.
        var before = config.Arms.ToDictionary(a => a.Name, a => File.ReadAllBytes(Study.MetricsPath(config, a.Name)));
        Directory.Delete(config.WorkDir, recursive: true);
        var third = new Recorder();
        new Study(config, third).Run();
        Assert.False(Directory.Exists(config.WorkDir));
        Assert.Equal(3, third.Messages.Count(m => m.Contains("finished earlier", StringComparison.Ordinal)));
        foreach (var a in config.Arms) Assert.Equal(before[a.Name], File.ReadAllBytes(Study.MetricsPath(config, a.Name)));

        // Other settings never reuse a finished arm's results silently.
        var changed = config with { Dit = config.Dit with { Steps = 6, Checkpoints = new[] { 2, 6 } } };
        var e = Assert.Throws<SvgdException>(() => new Study(changed, new Recorder()).Run());
        Assert.Contains(Study.MetricsPath(config, "svg"), e.Message);
    }

    [Fact]
    public void CommittedFashionMnistStudyHasFiveArmsAtOneBudget()
    {
        var c = StudyConfig.Load(Path.Combine(Reference.RepoRoot, "studies", "fashion-mnist.json"));
        var presets = c.Arms.Where(a => a.Preset != null).Select(a => a.Preset!).ToList();
        Assert.Equal(3, presets.Count(p => p.StartsWith("svg-", StringComparison.Ordinal)));
        Assert.Equal(2, presets.Count(p => p.StartsWith("vae-", StringComparison.Ordinal)));
        Assert.True(c.Dit.Checkpoints.Count >= 4);
        Assert.Equal(new[] { 1, 2, 5, 10, 25 }, c.Evaluation.SweepSteps);
        Assert.Contains(1.0, c.Evaluation.SweepCfg);
        Assert.Contains(c.Evaluation.SweepCfg, g => g > 1);
    }

    [Fact]
    public void BadStudyConfigsAreRefusedWithTheirReason()
    {
        string root = Reference.TempDir();
        var ok = Tiny(root);
        Assert.Contains("autoencoder_from", Assert.Throws<SvgdException>(() => (ok with { Arms = new[] { new StudyArm { Name = "a", AutoencoderFrom = "nope" } } }).Validate("s.json")).Message);
        Assert.Contains("unknown autoencoder preset", Assert.Throws<SvgdException>(() => (ok with { Arms = new[] { new StudyArm { Name = "a", Preset = "svg-huge" } } }).Validate("s.json")).Message);
        Assert.Contains("dit.checkpoints", Assert.Throws<SvgdException>(() => (ok with { Dit = ok.Dit with { Checkpoints = new[] { 2, 3 } } }).Validate("s.json")).Message);
        var missing = ok with { TrainImages = Path.Combine(root, "absent") };
        Assert.Contains("absent: image folder not found", Assert.Throws<SvgdException>(() => new Study(missing, new Recorder()).Run()).Message);
    }
}
