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

    /// <summary>A running svgd job; <paramref name="env"/> is added to every process's environment.</summary>
    public static Job Start(IEnumerable<string> mpiexecArgs, IDictionary<string, string>? env)
    {
        Assert.True(Launcher != "", "mpiexec not found: the data-parallel tests need MPICH (apt-get install mpich; .ci/run installs it)");
        var psi = new ProcessStartInfo(Launcher)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Reference.RepoRoot,
        };
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

    [Fact]
    public void DiTOnTwoProcessesTakesTheStepsOfOneAndResumesExactly()
    {
        string dir = Reference.TempDir();
        string[] Args(string run, int steps) => new[] { "train", "--latents", data.Directory, "--out", Path.Combine(dir, run), "--preset", "svg-tiny",
            "--steps", steps.ToString(), "--batch-size", "8", "--lr", "1e-3", "--ema", "0.5", "--seed", "3", "--checkpoint-every", "0", "--sample-every", "0" };
        string Last(string run) => Path.Combine(dir, run, "last.safetensors");

        var one = Ok(Reference.RunCli(Args("one", 4)), "1 process");
        var two = Ok(MpiJob.Run(2, Args("two", 4)), "2 processes");
        Assert.StartsWith("data-parallel over 2 processes", two.Out.TrimStart());
        Assert.Contains("gradient allreduce:", two.Out);
        Assert.Equal(4, DiTTrainer.ReadInfo(Last("two")).Step);

        // Same global batch of 8: the same update up to float32 summation order (two halves summed vs one sum).
        double diff = MaxDiff(Last("one"), Last("two"), "model.", "ema.");
        log.WriteLine($"DiT: 1 vs 2 processes after 4 steps: max |diff| {diff:g3}");
        Assert.True(diff < 1e-6, $"2 processes differ from 1 by {diff:g3}");
        Assert.Equal(0, MaxDiff(Last("one"), Last("two"), "stats."));

        // Stopped after 2 steps and resumed on 2 processes: bit for bit the uninterrupted 2-process run.
        Ok(MpiJob.Run(2, Args("split", 2)), "2 processes, first half");
        File.Copy(Last("split"), Path.Combine(dir, "half.safetensors"));
        // Steps 3 and 4 move the weights by far more than the tolerance above: the comparison has teeth.
        double moved = MaxDiff(Last("two"), Path.Combine(dir, "half.safetensors"), "model.");
        Assert.True(moved > 1e-3, $"two steps moved the weights by {moved:g3} only");
        Assert.Equal("2", SafeTensors.ReadHeader(Last("split")).Metadata["svgd.world_size"]);
        var resumed = Ok(MpiJob.Run(2, Args("split", 4).Concat(new[] { "--resume", Last("split") }).ToArray()), "2 processes, resumed");
        Assert.DoesNotContain("warning", resumed.Err);
        AssertIdenticalFiles(Last("two"), Last("split"));

        // Resumed on one process: a one-line warning, and the same run within summation order.
        string again = Path.Combine(dir, "again");
        var single = Ok(Reference.RunCli("train", "--latents", data.Directory, "--out", again, "--resume", Path.Combine(dir, "half.safetensors"), "--steps", "4"), "resume on 1 process");
        var warnings = single.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("warning:")).ToList();
        Assert.True(warnings.Count == 1 && warnings[0].Contains("trained by 2 processes and continues with 1"), single.Err);
        double diffResumed = MaxDiff(Last("two"), Path.Combine(again, "last.safetensors"), "model.", "ema.");
        Assert.True(diffResumed < 1e-6, $"resumed on 1 process differs by {diffResumed:g3}");
    }
}
