using System.Diagnostics;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Distributed;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>The built svgd CLI under MPICH's mpiexec (installed by .ci/run).</summary>
internal static class MpiJob
{
    static string Svgd => Path.Combine(AppContext.BaseDirectory, "svgd.dll");

    /// <summary>MPICH's launcher: mpiexec.mpich where Open MPI may own plain mpiexec.</summary>
    public static string Launcher { get; } = FindLauncher();

    static string FindLauncher()
    {
        foreach (var name in new[] { "mpiexec.mpich", "mpiexec.hydra", "mpiexec" })
            foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
                if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return "";
    }

    /// <summary>svgd on <paramref name="processes"/> processes (mpiexec -n).</summary>
    public static (int Code, string Out, string Err) Run(int processes, params string[] args) =>
        Start(new[] { "-n", processes.ToString() }.Append("dotnet").Append(Svgd).Concat(args), null).Wait();

    /// <summary>One process per argument list (mpiexec's MPMD form: -n 1 A : -n 1 B).</summary>
    public static (int Code, string Out, string Err) RunEach(params string[][] perRank) =>
        Start(perRank.SelectMany((a, i) => (i > 0 ? new[] { ":" } : Array.Empty<string>()).Concat(new[] { "-n", "1", "dotnet", Svgd }).Concat(a)), null).Wait();

    /// <summary>What follows mpiexec's options: dotnet, the CLI, <paramref name="args"/>.</summary>
    public static IEnumerable<string> SvgdCommand(params string[] args) => new[] { "dotnet", Svgd }.Concat(args);

    /// <summary>A running svgd job; <paramref name="env"/> is added to every process's environment, and
    /// <paramref name="via"/> (e.g. ip netns exec NS) runs mpiexec.</summary>
    public static Job Start(IEnumerable<string> mpiexecArgs, IDictionary<string, string>? env, string[]? via = null)
    {
        Assert.True(Launcher != "", "mpiexec not found: the data-parallel tests need MPICH (apt-get install mpich; .ci/run installs it)");
        var psi = new ProcessStartInfo(via?[0] ?? Launcher)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Reference.RepoRoot,
        };
        if (via != null) foreach (var a in via.Skip(1).Append(Launcher)) psi.ArgumentList.Add(a);
        foreach (var a in mpiexecArgs) psi.ArgumentList.Add(a);
        // One libtorch thread per process, the default on a 2-core machine for 2 processes, whatever the machine.
        psi.Environment["OMP_NUM_THREADS"] = "1";
        if (env != null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return new Job(Process.Start(psi)!);
    }

    public sealed class Job : IDisposable
    {
        readonly Process _p;
        readonly System.Text.StringBuilder _out = new(), _err = new();

        public Job(Process p)
        {
            _p = p;
            p.OutputDataReceived += (_, e) => { if (e.Data != null) lock (_out) _out.AppendLine(e.Data); };
            p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_err) _err.AppendLine(e.Data); };
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
        }

        public bool HasExited => _p.HasExited;
        public string Out { get { lock (_out) return _out.ToString(); } }
        public string Err { get { lock (_err) return _err.ToString(); } }

        public (int Code, string Out, string Err) Wait(int seconds = 300)
        {
            try
            {
                Assert.True(_p.WaitForExit(seconds * 1000), $"mpiexec did not finish in {seconds} s:\n{Out}\n{Err}");
                _p.WaitForExit();
                return (_p.ExitCode, Out, Err);
            }
            finally
            {
                Dispose();
            }
        }

        public void Dispose()
        {
            if (!_p.HasExited) _p.Kill(entireProcessTree: true);
        }
    }

    /// <summary>Process ids of the job's processes of rank <paramref name="rank"/> whose environment holds <paramref name="marker"/>.</summary>
    public static List<int> RankProcesses(string marker, int rank)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string[] env;
            try { env = File.ReadAllText(Path.Combine(dir, "environ")).Split('\0'); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; }
            if (env.Contains(marker) && env.Contains($"PMI_RANK={rank}")) found.Add(pid);
        }
        return found;
    }
}

/// <summary>
/// Data-parallel training and sharded evaluation over 2 processes (mpiexec -n 2) against the same
/// commands in one process: same global batch, same result (within float32 summation order for training,
/// bit for bit for per-sample work).
/// </summary>
public class DataParallelTests(FashionLatents data, ITestOutputHelper log) : IClassFixture<FashionLatents>
{
    static string Fashion => AutoencoderTrainingTests.FashionMnist;

    static (int Code, string Out, string Err) Ok((int Code, string Out, string Err) r, string what)
    {
        Assert.True(r.Code == 0, $"{what} failed ({r.Code}):\n{r.Out}\n{r.Err}");
        return r;
    }

    /// <summary>Largest absolute difference over the float tensors whose names start with one of <paramref name="prefixes"/>.</summary>
    static double MaxDiff(string expectedPath, string actualPath, params string[] prefixes)
    {
        var a = SafeTensors.Load(expectedPath);
        var b = SafeTensors.Load(actualPath);
        double diff = 0;
        int compared = 0;
        foreach (var (k, t) in a)
        {
            if (!prefixes.Any(p => k.StartsWith(p, StringComparison.Ordinal)) || !t.dtype.IsFloatingPoint()) continue;
            Assert.True(b.ContainsKey(k), $"{actualPath} lacks {k}");
            diff = Math.Max(diff, Reference.MaxAbs(t, b[k]));
            compared++;
        }
        Assert.True(compared > 0, $"no tensors under {string.Join(", ", prefixes)} in {expectedPath}");
        return diff;
    }

    static void AssertIdenticalFiles(string expected, string actual)
    {
        var a = SafeTensors.Load(expected);
        var b = SafeTensors.Load(actual);
        Assert.Equal(a.Keys.OrderBy(k => k), b.Keys.OrderBy(k => k));
        var differing = a.Where(kv => !Reference.Same(kv.Value, b[kv.Key])).Select(kv => kv.Key).ToList();
        Assert.True(differing.Count == 0, $"{actual} differs from {expected} in {string.Join(", ", differing.Take(5))}");
    }

    static List<(string Name, Tensor FirstMoment)> DiTMoments(string path)
    {
        using var model = new Models.Diffusion.DiT(DiTTrainer.ReadInfo(path).Model);
        return FirstMoments(path, "optimizer.dit", model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)).ToList(), adamW: true);
    }

    [Fact]
    public void DiTOnTwoProcessesTakesTheStepsOfOneAndResumesExactly()
    {
        string dir = Reference.TempDir();
        string[] Args(string run, int steps) => new[] { "train", "--latents", data.Directory, "--out", Path.Combine(dir, run), "--preset", "svg-tiny",
            "--steps", steps.ToString(), "--batch-size", "8", "--lr", "1e-3", "--ema", "0.5", "--seed", "3", "--checkpoint-every", "0", "--sample-every", "0" };
        string Last(string run) => Path.Combine(dir, run, "last.safetensors");

        Ok(Reference.RunCli(Args("one", 4)), "1 process");
        var two = Ok(MpiJob.Run(2, Args("two", 4)), "2 processes");
        Assert.StartsWith("data-parallel over 2 processes", two.Out.TrimStart());
        Assert.Contains("gradient allreduce:", two.Out);
        Assert.Equal("2", SafeTensors.ReadHeader(Last("two")).Metadata["svgd.world_size"]);

        // Same global batch of 8 (times, noise and dropped labels drawn per sample): the same gradients up to
        // float32 summation order, two halves summed against one sum. (The DiT starts adaLN-zero: only after
        // a few steps do all its parameters get gradients, hence 4 steps and the moments, not one gradient.)
        var (worst, worstName) = GradientDifference(DiTMoments(Last("one")), DiTMoments(Last("two")));
        double weights = MaxDiff(Last("one"), Last("two"), "model.", "ema.");
        log.WriteLine($"DiT, 4 steps: 1 vs 2 processes, largest difference of the Adam first moments {worst:g3} of the tensor's largest ({worstName}); weights {weights:g3}");
        Assert.True(worst < 1e-4, $"the gradients of {worstName} differ by {worst:g3} of their scale between 1 and 2 processes");
        Assert.True(weights < 1e-5, $"the weights differ by {weights:g3} between 1 and 2 processes");
        Assert.Equal(0, MaxDiff(Last("one"), Last("two"), "stats."));

        // Stopped after 2 steps and resumed on 2 processes: bit for bit the uninterrupted 2-process run.
        Ok(MpiJob.Run(2, Args("split", 2)), "2 processes, 2 steps");
        File.Copy(Last("split"), Path.Combine(dir, "half.safetensors"));
        var resumed = Ok(MpiJob.Run(2, Args("split", 4).Concat(new[] { "--resume", Last("split") }).ToArray()), "2 processes, resumed");
        Assert.DoesNotContain("warning", resumed.Err);
        AssertIdenticalFiles(Last("two"), Last("split"));

        // Resumed on one process: a one-line warning, then the same steps within summation order.
        string again = Path.Combine(dir, "again");
        var single = Ok(Reference.RunCli("train", "--latents", data.Directory, "--out", again, "--resume", Path.Combine(dir, "half.safetensors"), "--steps", "4"), "resume on 1 process");
        var warning = Assert.Single(single.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("warning:"));
        Assert.Contains("trained by 2 processes and continues with 1", warning);
        Assert.Equal("1", SafeTensors.ReadHeader(Path.Combine(again, "last.safetensors")).Metadata["svgd.world_size"]);
        Assert.True(GradientDifference(DiTMoments(Last("two")), DiTMoments(Path.Combine(again, "last.safetensors"))).Worst < 1e-4);
    }

    /// <summary>
    /// Two hosts: ranks 0 and 1 in network namespaces joined by a veth pair (<see cref="NamespaceHosts"/>), started
    /// by mpiexec from a hosts file as on two machines. They train what one process trains; rank 1's process is
    /// killed after a checkpoint, which ends the job in one line naming it, and the run resumed from that
    /// checkpoint ends bit for bit where the uninterrupted one did.
    /// </summary>
    [Fact]
    public void DiTOnTwoHostsTrainsAsOneProcessAndResumesAfterLosingAHost()
    {
        string dir = Reference.TempDir();
        using var hosts = NamespaceHosts.Create(dir);
        const int steps = 8;
        string[] Args(string run, int n) => new[] { "train", "--latents", data.Directory, "--out", Path.Combine(dir, run), "--preset", "svg-tiny",
            "--steps", n.ToString(), "--batch-size", "8", "--lr", "1e-3", "--ema", "0.5", "--seed", "3", "--checkpoint-every", "2", "--sample-every", "0" };
        string Last(string run) => Path.Combine(dir, run, "last.safetensors");
        // The documented multi-host lines (docs/data-parallel.md, linked from the README) are these: the same hosts file, the same options.
        string readme = File.ReadAllText(Path.Combine(Reference.RepoRoot, "docs", "data-parallel.md"));
        Assert.Contains($"printf '{File.ReadAllText(hosts.HostsFile).Replace("\n", "\\n")}' > hosts", readme);
        Assert.Contains($"mpiexec.mpich {string.Join(" ", NamespaceHosts.Options)} ./svgd train", readme);
        MpiJob.Job OnTwoHosts(string[] args, IDictionary<string, string>? env = null) =>
            MpiJob.Start(hosts.MpiexecArgs.Concat(MpiJob.SvgdCommand(args)), env, via: hosts.OnA);

        var clock = Stopwatch.StartNew();
        // One process with the one libtorch thread each process of the job has (two threads on a busy 2-core machine take 4 times as long).
        Ok(MpiJob.Run(1, Args("one", steps)), "1 process");
        log.WriteLine($"1 process: {clock.Elapsed.TotalSeconds:F1} s");
        long sentBefore = hosts.BytesSentByB();
        var two = Ok(OnTwoHosts(Args("two", steps)).Wait(120), "2 hosts");
        long sent = hosts.BytesSentByB() - sentBefore;
        log.WriteLine($"2 hosts: {clock.Elapsed.TotalSeconds:F1} s");
        Assert.StartsWith("data-parallel over 2 processes", two.Out.TrimStart());
        Assert.True(two.Err.Trim() == "", two.Err);
        // The gradients crossed the veth: each step rank 1 sends at least half its gradients to rank 0 (the whole of
        // them with the allreduces MPICH picks for 2 ranks); through shared memory it would send a few kB in all.
        var reduce = System.Text.RegularExpressions.Regex.Match(two.Out, @"gradient allreduce: ([0-9.]+) MiB per step");
        Assert.True(reduce.Success, two.Out);
        double gradientBytes = double.Parse(reduce.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) * 1048576 * steps;
        log.WriteLine($"host B sent {sent / 1048576.0:F1} MiB over the veth for {gradientBytes / 1048576:F1} MiB of gradients");
        Assert.True(sent >= 0.5 * gradientBytes, $"host B sent {sent} bytes over the veth, less than half the {gradientBytes:F0} bytes of its gradients: the ranks did not talk over it");
        var (worst, worstName) = GradientDifference(DiTMoments(Last("one")), DiTMoments(Last("two")));
        double weights = MaxDiff(Last("one"), Last("two"), "model.", "ema.");
        log.WriteLine($"DiT, {steps} steps: 1 process vs 2 hosts, largest difference of the Adam first moments {worst:g3} ({worstName}); weights {weights:g3}");
        Assert.True(worst < 1e-4, $"the gradients of {worstName} differ by {worst:g3} of their scale between 1 process and 2 hosts");
        Assert.True(weights < 1e-5, $"the weights differ by {weights:g3} between 1 process and 2 hosts");

        // Host B's rank is killed once a checkpoint is written: the job ends, bounded, with one line naming rank 1.
        string marker = Guid.NewGuid().ToString("N");
        var watch = Stopwatch.StartNew();
        using var job = OnTwoHosts(Args("cut", 1_000_000), new Dictionary<string, string> { ["SVGD_TEST_JOB"] = marker });
        while (!File.Exists(Last("cut")) && !job.HasExited && watch.Elapsed < TimeSpan.FromSeconds(90)) Thread.Sleep(20);
        var rank1 = MpiJob.RankProcesses("SVGD_TEST_JOB=" + marker, 1);
        var rank0 = MpiJob.RankProcesses("SVGD_TEST_JOB=" + marker, 0);
        Assert.True(rank1.Count == 1 && rank0.Count == 1, $"no checkpoint, or the ranks not found:\n{job.Out}\n{job.Err}");
        Assert.Equal(hosts.A, NamespaceHosts.NamespaceOf(rank0[0]));
        Assert.Equal(hosts.B, NamespaceHosts.NamespaceOf(rank1[0]));
        Process.GetProcessById(rank1[0]).Kill();
        log.WriteLine($"killed rank 1 (pid {rank1[0]} in {hosts.B}): {clock.Elapsed.TotalSeconds:F1} s");
        var killed = job.Wait(60);
        Assert.NotEqual(0, killed.Code);
        var line = Assert.Single(killed.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        log.WriteLine($"{line}\n(mpiexec's exit code {killed.Code}, {clock.Elapsed.TotalSeconds:F1} s)");
        Assert.Matches($@"^error: lost rank 1 of 2 \(pid {rank1[0]} on .* at {System.Text.RegularExpressions.Regex.Escape(NamespaceHosts.AddressB)}\): .*--resume", line);
        Assert.Empty(MpiJob.RankProcesses("SVGD_TEST_JOB=" + marker, 0));
        int cut = DiTTrainer.ReadInfo(Last("cut")).Step;
        Assert.True(cut is > 0 and < steps && cut % 2 == 0, $"the job was cut at step {cut}, not before step {steps}");

        // Resumed on the two hosts from the checkpoint the killed job left: the uninterrupted run's weights, bit for bit.
        var resumed = Ok(OnTwoHosts(Args("cut", steps).Concat(new[] { "--resume", Last("cut") }).ToArray()).Wait(120), "2 hosts, resumed");
        Assert.Contains($"steps {cut} -> {steps}", resumed.Out);
        Assert.DoesNotContain("warning", resumed.Err);
        AssertIdenticalFiles(Last("two"), Last("cut"));
        log.WriteLine($"cut at step {cut}, resumed to {steps}: identical to the uninterrupted run; {clock.Elapsed.TotalSeconds:F1} s in all");
    }

    /// <summary>
    /// Adam's first moments after one step from the same weights: (1 - beta1) times that step's gradient, for
    /// <paramref name="parameters"/> in the optimiser's order. Comparing them compares the gradients themselves;
    /// comparing weights would not, since Adam's first steps move each weight by about lr·sign(gradient), turning
    /// float32 noise in gradients that are zero in exact arithmetic (attention key biases: softmax ignores them)
    /// into differences of a sizeable part of lr.
    /// </summary>
    static List<(string Name, Tensor FirstMoment)> FirstMoments(string path, string key, IReadOnlyList<(string Name, TorchSharp.Modules.Parameter P)> parameters, bool adamW)
    {
        var list = parameters.Select(p => p.P).ToList();
        TorchSharp.Modules.OptimizerHelper opt = adamW ? torch.optim.AdamW(list) : torch.optim.Adam(list);
        using (var file = SafeTensors.Open(path)) RunCheckpoint.RestoreOptimizer(opt, file, key);
        var moments = opt.state_dict().State.Select(st => st is TorchSharp.Modules.AdamW.State w ? w.exp_avg : ((TorchSharp.Modules.Adam.State)st).exp_avg).ToList();
        Assert.Equal(list.Count, moments.Count);
        return parameters.Select((p, i) => (p.Name, moments[i].clone())).ToList();
    }

    /// <summary>The largest difference between two sets of gradients relative to each tensor's largest value, and where.</summary>
    static (double Worst, string Name) GradientDifference(List<(string Name, Tensor G)> a, List<(string Name, Tensor G)> b)
    {
        double worst = 0;
        string at = "";
        int compared = 0;
        foreach (var ((name, ga), (_, gb)) in a.Zip(b))
        {
            double scale = ga.abs().max().item<float>();
            // Gradients that are zero in exact arithmetic are float32 noise in both runs.
            if (scale < 1e-9) continue;
            compared++;
            double rel = Reference.MaxAbs(ga, gb) / scale;
            if (rel > worst) (worst, at) = (rel, name);
        }
        Assert.True(compared > a.Count / 2, $"only {compared} of {a.Count} gradients are non-zero");
        return (worst, at);
    }

    static List<(string Name, Tensor FirstMoment)> AutoencoderMoments(string path)
    {
        var model = Models.Autoencoder.SvgAutoencoderCheckpoint.Load(path);
        var config = Config.ConfigJson.ParseText<AutoencoderTrainingConfig>(SafeTensors.ReadHeader(path).Metadata["svgd.autoencoder_training_config"], path);
        var disc = new Models.Losses.PatchDiscriminator(layers: config.DiscLayers);
        var names = model.named_parameters().ToDictionary(p => p.parameter.Handle, p => p.name);
        // The trainer's order: residual encoder, decoder, mask token.
        var trainable = model.ResidualEncoder.parameters().Concat(model.Decoder.parameters()).Append(model.MaskToken).Select(p => (names[p.Handle], p)).ToList();
        return FirstMoments(path, "optimizer.autoencoder", trainable, adamW: false)
            .Concat(FirstMoments(path, "optimizer.discriminator", disc.named_parameters().Select(p => ("discriminator." + p.name, p.parameter)).ToList(), adamW: false)).ToList();
    }

    [Fact]
    public void AutoencoderWithPatchGanOnTwoProcessesTakesTheStepOfOneAndResumesExactly()
    {
        string dir = Reference.TempDir();
        // Two autoencoders of one architecture: rank 1 is given the other, and must train rank 0's (broadcast from rank 0).
        foreach (var (name, seed) in new[] { ("a", 1), ("b", 2) })
        {
            torch.manual_seed(seed);
            using var init = new Models.Autoencoder.SvgAutoencoder(Models.Autoencoder.SvgAutoencoderPresets.Get("svg-resnet18-32px"));
            Models.Autoencoder.SvgAutoencoderCheckpoint.Save(init, Path.Combine(dir, name + ".safetensors"));
        }
        // Residual-ViT dropout and attention dropout, residual masking, crops, flips, batch alignment statistics,
        // the PatchGAN's BatchNorm and its adaptive weight all take part: the GAN is on from the first step.
        string[] Args(string run, int steps, string init = "a") => new[] { "train-autoencoder", "--images", Fashion, "--out", Path.Combine(dir, run),
            "--init", Path.Combine(dir, init + ".safetensors"), "--steps", steps.ToString(), "--batch-size", "8", "--disc-start", "0", "--lr", "1e-3", "--seed", "2",
            "--checkpoint-every", "0", "--sample-every", "0" };
        string Last(string run) => Path.Combine(dir, run, "last.safetensors");

        Ok(Reference.RunCli(Args("one", 1)), "1 process");
        var two = Ok(MpiJob.RunEach(Args("two", 1), Args("two", 1, init: "b")), "2 processes");
        Assert.StartsWith("data-parallel over 2 processes", two.Out.TrimStart());
        // Only rank 0 warns (no LPIPS weights here), once.
        Assert.Single(two.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith("warning:"));

        // The step's gradients, autoencoder and discriminator, relative to each tensor's largest.
        var a = AutoencoderMoments(Last("one"));
        var (worst, worstName) = GradientDifference(a, AutoencoderMoments(Last("two")));
        log.WriteLine($"autoencoder step with PatchGAN: 1 vs 2 processes, largest gradient difference {worst:g3} of the tensor's largest ({worstName})");
        Assert.True(worst < 1e-4, $"the gradient of {worstName} differs by {worst:g3} of its scale between 1 and 2 processes");
        Assert.Contains(a, t => t.Name.StartsWith("discriminator.main.3") && t.FirstMoment.abs().max().item<float>() > 1e-6);

        // Forward quantities of the global batch: latent alignment and BatchNorm running statistics.
        double stats = MaxDiff(Last("one"), Last("two"), "alignment.", "loss.discriminator.main.3.running", "loss.discriminator.main.6.running", "loss.discriminator.main.9.running");
        log.WriteLine($"alignment and BatchNorm running statistics: max |diff| {stats:g3}");
        Assert.True(stats < 1e-5, $"batch statistics differ by {stats:g3}");

        // Stopped after one step and resumed on 2 processes: bit for bit the uninterrupted 2-process run.
        Ok(MpiJob.Run(2, Args("straight", 2)), "2 processes, 2 steps");
        Ok(MpiJob.Run(2, Args("two", 2).Concat(new[] { "--resume", Last("two") }).ToArray()), "2 processes, resumed");
        AssertIdenticalFiles(Last("straight"), Last("two"));
    }

    [Fact]
    public void ShardedCacheLatentsAndSampleEvalWriteWhatOneProcessWrites()
    {
        string dir = Reference.TempDir();
        string ae = Reference.File_("svg_autoencoder.ckpt"), cfg = Reference.File_("svg_autoencoder.json");
        string[] Cache(string o) => new[] { "cache-latents", "--autoencoder", ae, "--config", cfg, "--images", Fashion, "--out", Path.Combine(dir, o), "--flip", "--shard-size", "8", "--batch-size", "4" };
        Ok(Reference.RunCli(Cache("cache1")), "cache-latents, 1 process");
        var two = Ok(MpiJob.Run(2, Cache("cache2")), "cache-latents, 2 processes");
        Assert.Contains("5 shards written", two.Out);
        var files = Directory.GetFiles(Path.Combine(dir, "cache1")).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(files, Directory.GetFiles(Path.Combine(dir, "cache2")).Select(Path.GetFileName).Order().ToList());
        foreach (var f in files.Where(f => f!.EndsWith(".safetensors")))
            Assert.True(File.ReadAllBytes(Path.Combine(dir, "cache1", f!)).SequenceEqual(File.ReadAllBytes(Path.Combine(dir, "cache2", f!))), $"{f} differs");
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "cache1", "index.json")), File.ReadAllText(Path.Combine(dir, "cache2", "index.json")));

        string dit = CliTests.TinyDiT(dir);
        string[] Eval(string o) => new[] { "sample-eval", "--model", dit, "--no-stats", "--autoencoder", ae, "--config", cfg,
            "--feature-network", "dinov3", "--feature-encoder", Reference.File_("dinov3_swiglu.pth"), "--feature-size", "64",
            "--n", "10", "--shard-size", "3", "--batch-size", "2", "--steps", "2", "--out", Path.Combine(dir, o) };
        // One process with the one libtorch thread each process of the job has: the same kernels, so the same bits.
        Ok(MpiJob.Run(1, Eval("one.npz")), "sample-eval, 1 process");
        // A shard already there is kept: 3 of the 4 shards are left for 2 processes.
        Directory.CreateDirectory(Path.Combine(dir, "two.npz.shards"));
        File.Copy(Path.Combine(dir, "one.npz.shards", "shard-00002.safetensors"), Path.Combine(dir, "two.npz.shards", "shard-00002.safetensors"));
        var eval = Ok(MpiJob.Run(2, Eval("two.npz")), "sample-eval, 2 processes");
        Assert.Contains("resuming: 1 of 4 shards already done", eval.Out);
        for (int k = 0; k < 4; k++)
            AssertIdenticalFiles(Path.Combine(dir, "one.npz.shards", $"shard-{k:D5}.safetensors"), Path.Combine(dir, "two.npz.shards", $"shard-{k:D5}.safetensors"));
        var a = Evaluation.Npz.Load(Path.Combine(dir, "one.npz"));
        var b = Evaluation.Npz.Load(Path.Combine(dir, "two.npz"));
        Assert.True(Reference.Same(a["mu"], b["mu"]) && Reference.Same(a["sigma"], b["sigma"]), "the statistics of 2 processes differ from 1 process's");
    }

    [Fact]
    public void FailuresOfAJobAreOneLine()
    {
        string dir = Reference.TempDir();
        string[] Train(params string[] extra) => new[] { "train", "--latents", data.Directory, "--out", Path.Combine(dir, "run"), "--preset", "svg-tiny",
            "--batch-size", "4", "--checkpoint-every", "0", "--sample-every", "0" }.Concat(extra).ToArray();
        static string[] Lines(string s) => s.Split('\n', StringSplitOptions.RemoveEmptyEntries);

        // The ranks disagree on an option: found before any step, reported once by rank 0, naming the rank and the setting.
        var mismatch = MpiJob.RunEach(Train("--steps", "2", "--lr", "1e-3"), Train("--steps", "2", "--lr", "2e-3"));
        Assert.Equal(1, mismatch.Code);
        var line = Assert.Single(Lines(mismatch.Err));
        Assert.Contains("rank 1 has another configuration, dataset or step than rank 0", line);
        Assert.Contains("0.002", line);
        Assert.False(File.Exists(Path.Combine(dir, "run", "last.safetensors")));

        // A failure of one process alone (here: its data is missing) ends the job with that process's line.
        string[] lost = Train("--steps", "2");
        lost[Array.IndexOf(lost, "--latents") + 1] = Path.Combine(dir, "no-such-cache");
        var alone = MpiJob.RunEach(Train("--steps", "2"), lost);
        Assert.NotEqual(0, alone.Code);
        Assert.Matches("^error: rank 1 of 2: .*no-such-cache", Assert.Single(Lines(alone.Err)));

        // A command that does not run data-parallel is refused under mpiexec, once.
        var other = MpiJob.Run(2, "inspect", Reference.File_("svg_dit.pt"));
        Assert.Equal(1, other.Code);
        Assert.Contains("'svgd inspect' runs in one process", Assert.Single(Lines(other.Err)));

        // A process killed mid-run takes the job down instead of leaving the others waiting.
        string marker = "SVGD_TEST_JOB=" + Guid.NewGuid().ToString("N");
        string[] endless = Train("--steps", "1000000");
        endless[Array.IndexOf(endless, "--out") + 1] = Path.Combine(dir, "killed");
        using var job = MpiJob.Start(new[] { "-n", "2", "dotnet", Path.Combine(AppContext.BaseDirectory, "svgd.dll") }.Concat(endless),
            new Dictionary<string, string> { [marker.Split('=')[0]] = marker.Split('=')[1] });
        var watch = Stopwatch.StartNew();
        while (!job.Out.Contains("steps 0 -> 1000000") && watch.Elapsed < TimeSpan.FromSeconds(120)) Thread.Sleep(200);
        Thread.Sleep(1000);
        var victims = MpiJob.RankProcesses(marker, 1);
        Assert.True(victims.Count == 1, $"rank 1 not found:\n{job.Out}\n{job.Err}");
        Process.GetProcessById(victims[0]).Kill();
        var killed = job.Wait(60);
        Assert.NotEqual(0, killed.Code);
        Assert.Empty(MpiJob.RankProcesses(marker, 0));
    }

    /// <summary>Runs svgd in a child process without a launcher but with launcher variables set.</summary>
    static (int Code, string Out, string Err) Svgd(IDictionary<string, string> env, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "svgd.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "svgd did not exit");
        return (p.ExitCode, output, err.Result);
    }

    [Fact]
    public void LaunchesSvgdCannotUseAreOneLineAndNoLauncherNeverLoadsMpi()
    {
        string[] train = { "train", "--latents", data.Directory, "--out", Path.Combine(Reference.TempDir(), "run"), "--preset", "svg-tiny", "--steps", "1", "--batch-size", "2" };
        var missing = Svgd(new Dictionary<string, string> { ["PMI_RANK"] = "0", ["PMI_SIZE"] = "2", ["SVGD_MPI_LIBRARY"] = "/nonexistent/libmpich.so.12" }, train);
        Assert.Equal(1, missing.Code);
        var line = Assert.Single(missing.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("/nonexistent/libmpich.so.12 cannot be loaded", line);
        Assert.Contains("apt-get install mpich", line);

        var openMpi = Svgd(new Dictionary<string, string> { ["OMPI_COMM_WORLD_SIZE"] = "2", ["OMPI_COMM_WORLD_RANK"] = "0" }, train);
        Assert.Equal(1, openMpi.Code);
        Assert.Contains("Open MPI", Assert.Single(openMpi.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));

        // In this process no launcher is set: a whole training run leaves MPI unloaded.
        var r = Reference.RunCli(train);
        Assert.True(r.Code == 0, r.Err);
        Assert.DoesNotContain("data-parallel", r.Out);
        Assert.DoesNotContain(AppDomain.CurrentDomain.GetAssemblies(), a => a.GetName().Name == "MPI");
        Assert.DoesNotContain("libmpich", File.ReadAllText("/proc/self/maps"));
    }
}

public class DistributedUnitTests
{
    static Func<string, string?> Env(params (string, string)[] vars) => name => vars.FirstOrDefault(v => v.Item1 == name).Item2;

    [Fact]
    public void LaunchIsReadFromTheLauncherEnvironment()
    {
        Assert.False(MpiLaunch.Detect(Env()).IsDistributed);
        var hydra = MpiLaunch.Detect(Env(("PMI_RANK", "1"), ("PMI_SIZE", "4"), ("MPI_LOCALNRANKS", "2")));
        Assert.Equal(new Launch(1, 4, 2, Hydra: true), hydra);
        Assert.Equal(new Launch(3, 8, 1, Hydra: false), MpiLaunch.Detect(Env(("PMI_RANK", "3"), ("PMI_SIZE", "8"), ("SLURM_JOB_ID", "7"))));
        Assert.Contains("Open MPI", Assert.Throws<SvgdException>(() => MpiLaunch.Detect(Env(("OMPI_COMM_WORLD_SIZE", "2")))).Message);
        Assert.Contains("PMIx", Assert.Throws<SvgdException>(() => MpiLaunch.Detect(Env(("PMIX_RANK", "0"), ("PMIX_SIZE", "2")))).Message);
        Assert.Contains("srun --mpi=pmi2", Assert.Throws<SvgdException>(() => MpiLaunch.Detect(Env(("SLURM_STEP_NUM_TASKS", "4"), ("SLURM_PROCID", "0")))).Message);
        Assert.Contains("PMI_RANK=5", Assert.Throws<SvgdException>(() => MpiLaunch.Detect(Env(("PMI_RANK", "5"), ("PMI_SIZE", "2")))).Message);
        Assert.False(MpiLaunch.Detect(Env(("SLURM_STEP_NUM_TASKS", "1"), ("SLURM_PROCID", "0"))).IsDistributed);
    }

    [Fact]
    public void ShardsCoverTheBatchAndDrawWhatTheWholeBatchDraws()
    {
        foreach (var (size, ranks) in new[] { (8, 2), (7, 3), (5, 5), (256, 64) })
        {
            var parts = Enumerable.Range(0, ranks).Select(r => GlobalBatch.Shard(size, r, ranks)).ToList();
            Assert.Equal(Enumerable.Range(0, size), parts.SelectMany(p => Enumerable.Range(p.First, p.Count)));
            Assert.True(parts.Max(p => p.Count) - parts.Min(p => p.Count) <= 1);
        }
        using var whole = new SampleRandom(3, 17, 1, 0, 8);
        using var shard = new SampleRandom(3, 17, 1, 5, 3);
        using var all = whole.Normal(4, 2);
        using var part = shard.Normal(4, 2);
        Assert.True(Reference.Same(all.narrow(0, 5, 3), part));
        using var other = new SampleRandom(3, 18, 1, 5, 3);
        using var next = other.Normal(4, 2);
        Assert.False(Reference.Same(part, next), "another step draws other numbers");
    }

    [Fact]
    public void TensorsSurviveTheMessageFormat()
    {
        var t = new Dictionary<string, Tensor>
        {
            ["a"] = torch.randn(3, 4), ["b"] = torch.arange(5, dtype: ScalarType.Int64), ["c"] = torch.randn(2).to(ScalarType.BFloat16), ["empty"] = torch.zeros(0, 3),
        };
        var back = TensorMessage.Unpack(TensorMessage.Pack(t));
        Assert.Equal(t.Keys, back.Keys);
        foreach (var (k, v) in t) Assert.True(Reference.Same(v, back[k]), k);
    }
}
