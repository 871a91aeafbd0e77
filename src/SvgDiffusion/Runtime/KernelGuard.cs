using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SvgDiffusion.Checkpoints;
using TorchSharp;

namespace SvgDiffusion.Runtime;

/// <summary>What the kernel check concluded on one machine: the path taken and the evidence.</summary>
public sealed record KernelVerdict
{
    public int CheckVersion { get; init; }
    public string MachineKey { get; init; } = "";
    public string Cpu { get; init; } = "";
    public string LibTorch { get; init; } = "";
    public int Threads { get; init; }
    [JsonConverter(typeof(JsonStringEnumConverter<ConvPath>))]
    public ConvPath Path { get; init; }
    /// <summary>True when every check passed on <see cref="Path"/>.</summary>
    public bool AllPassed { get; init; }
    /// <summary>The checks on the chosen path.</summary>
    public List<KernelCheckResult> Results { get; init; } = new();
    /// <summary>Paths tried before the chosen one, each with the first check that failed there.</summary>
    public List<string> Rejected { get; init; } = new();
    public double CheckSeconds { get; init; }
    public DateTime CheckedAtUtc { get; init; }
}

/// <summary>
/// The process-wide decision about which kernels are trusted. At the first convolution (or the first
/// command) of a process it takes the verdict cached for this machine — CPU model and flags, libtorch
/// build, thread count and the oneDNN/MKL environment — or runs <see cref="KernelCheck"/> and caches
/// the result. Paths are tried in order: oneDNN with padded conv channels (exact, costs ~1%), then
/// oneDNN off. A switch, or a check no path passes, is one warning line: numbers are never silently wrong.
/// </summary>
public static class KernelGuard
{
    /// <summary>The paths in order of preference.</summary>
    public static readonly ConvPath[] Candidates = { ConvPath.PaddedChannels, ConvPath.OneDnnOff };

    /// <summary>Where one-line warnings go; the CLI points it at its error writer.</summary>
    /// <summary>
    /// Whether one of our own kernels is used: null when it is; otherwise why not: turned off by its
    /// environment switch (<paramref name="env"/>=<paramref name="offValue"/>), not supported here
    /// (<paramref name="unsupported"/>), or wrong in its float64 check on this machine, which also says so
    /// in one warning line ending with <paramref name="fallback"/>.
    /// </summary>
    internal static (string? Reason, IReadOnlyList<KernelCheckResult> Checks) DecideOwnKernel(
        string env, string[] onValues, string offValue, string? unsupported, Func<List<KernelCheckResult>> check, string fallback)
    {
        string? value = Environment.GetEnvironmentVariable(env);
        if (!string.IsNullOrEmpty(value) && !onValues.Contains(value))
        {
            if (value != offValue) throw new SvgdException($"{env}: '{value}' is not one of {string.Join(", ", onValues.Append(offValue))}");
            return ($"{env}={offValue}", Array.Empty<KernelCheckResult>());
        }
        if (unsupported != null) return (unsupported, Array.Empty<KernelCheckResult>());
        var checks = check();
        var bad = checks.FirstOrDefault(c => !c.Passed);
        if (bad == null) return (null, checks);
        string line = Describe(bad);
        Warn($"kernel check: {line}; {fallback}");
        return ($"failed its check: {line}", checks);
    }

    public static Action<string> Warn { get; set; } = m => Console.Error.WriteLine($"warning: {m}");

    static readonly object Gate = new();
    static KernelVerdict? _current;
    static ConvPath? _path;

    /// <summary>The conv path of this process; the first call decides it.</summary>
    public static ConvPath ConvPath => _path ?? Ensure().Path;

    /// <summary>The verdict in force, decided on first call (cached per machine).</summary>
    public static KernelVerdict Ensure()
    {
        lock (Gate)
        {
            if (_current != null) return _current;
            string? forced = Environment.GetEnvironmentVariable("SVGD_CONV_PATH");
            KernelVerdict verdict;
            if (!string.IsNullOrEmpty(forced))
            {
                var path = ParsePath(forced);
                verdict = new KernelVerdict { Path = path, MachineKey = MachineKey(), CheckVersion = KernelCheck.Version, Rejected = { $"SVGD_CONV_PATH={forced}: path forced, not checked" } };
                Warn($"SVGD_CONV_PATH={forced}: convolutions run on the {Describe(path)} path without the kernel check");
            }
            else
            {
                bool refresh = Environment.GetEnvironmentVariable("SVGD_KERNEL_CHECK") == "refresh";
                verdict = Evaluate(CacheDirectory(), useCache: !refresh);
                Report(verdict);
            }
            Apply(verdict.Path);
            _current = verdict;
            return verdict;
        }
    }

    /// <summary>Runs the checks anew (doctor), caches them and makes the result this process's verdict.</summary>
    public static KernelVerdict Recheck()
    {
        lock (Gate)
        {
            var verdict = Evaluate(CacheDirectory(), useCache: false);
            Apply(verdict.Path);
            _current = verdict;
            return verdict;
        }
    }

    public static ConvPath ParsePath(string s) => s.Trim().ToLowerInvariant() switch
    {
        "native" => ConvPath.Native,
        "padded" or "padded-channels" => ConvPath.PaddedChannels,
        "onednn-off" or "mkldnn-off" or "reference" => ConvPath.OneDnnOff,
        _ => throw new SvgdException($"SVGD_CONV_PATH: '{s}' is not one of native, padded, onednn-off"),
    };

    public static string Describe(ConvPath path) => path switch
    {
        ConvPath.Native => "native oneDNN",
        ConvPath.PaddedChannels => "oneDNN with padded conv channels",
        ConvPath.OneDnnOff => "oneDNN off (im2col + GEMM)",
        _ => path.ToString(),
    };

    /// <summary>Makes <paramref name="path"/> this process's: oneDNN on or off, conv routing.</summary>
    static void Apply(ConvPath path)
    {
        LibTorchNative.OneDnnEnabled = path != ConvPath.OneDnnOff;
        _path = path;
    }

    static void Report(KernelVerdict v)
    {
        if (WarningFor(v) is { } line) Warn(line);
    }

    /// <summary>The one line a verdict is worth, or null when the preferred path passed every check.</summary>
    public static string? WarningFor(KernelVerdict v)
    {
        if (!v.AllPassed)
        {
            var worst = v.Results.Where(r => !r.Passed).OrderByDescending(r => double.IsNaN(r.Error) ? double.MaxValue : r.Error).First();
            return $"kernel check: {Describe(worst)} on every path tried; results that use it are not trustworthy on this machine (run 'svgd doctor')";
        }
        if (v.Path != Candidates[0])
            return $"kernel check: {v.Rejected[0]}; switched to {Describe(v.Path)} for every convolution (run 'svgd doctor')";
        return null;
    }

    public static string Describe(KernelCheckResult r) =>
        $"{r.Kernel} {r.Dtype} ({r.Case}) is off by {(double.IsNaN(r.Error) ? "NaN" : r.Error.ToString("0.0e0"))} (tolerance {r.Tolerance:0.0e0})";

    /// <summary>
    /// The verdict for this machine: from <paramref name="cacheDir"/> when a verdict of the same machine
    /// key is there and <paramref name="useCache"/>, else by running the checks on each candidate path in
    /// turn. oneDNN is left in the state of the chosen path.
    /// </summary>
    /// <param name="runChecks">The checks of one path (tests substitute faults here); <see cref="KernelCheck.Run"/> by default.</param>
    public static KernelVerdict Evaluate(string? cacheDir, bool useCache, Func<ConvPath, List<KernelCheckResult>>? runChecks = null)
    {
        runChecks ??= path => KernelCheck.Run(path);
        string key = MachineKey();
        string? file = cacheDir == null ? null : System.IO.Path.Combine(cacheDir, $"kernels-{key}.json");
        if (useCache && file != null && TryRead(file, key) is { } cached)
        {
            LibTorchNative.OneDnnEnabled = cached.Path != ConvPath.OneDnnOff;
            return cached;
        }

        var sw = Stopwatch.StartNew();
        var rejected = new List<string>();
        (ConvPath Path, List<KernelCheckResult> Results)? best = null;
        foreach (var path in Candidates)
        {
            LibTorchNative.OneDnnEnabled = path != ConvPath.OneDnnOff;
            var results = runChecks(path);
            var failed = results.Where(r => !r.Passed).ToList();
            if (best == null || failed.Count < best.Value.Results.Count(r => !r.Passed)) best = (path, results);
            if (failed.Count == 0) break;
            rejected.Add($"{Describe(failed[0])} on the {Describe(path)} path" + (failed.Count > 1 ? $" ({failed.Count} checks failed)" : ""));
        }
        var (chosen, chosenResults) = best!.Value;
        LibTorchNative.OneDnnEnabled = chosen != ConvPath.OneDnnOff;
        var verdict = new KernelVerdict
        {
            CheckVersion = KernelCheck.Version,
            MachineKey = key,
            Cpu = CpuInfo.Current.Summary(),
            LibTorch = LibTorchNative.NativePath(),
            Threads = torch.get_num_threads(),
            Path = chosen,
            AllPassed = chosenResults.All(r => r.Passed),
            Results = chosenResults,
            Rejected = rejected,
            CheckSeconds = sw.Elapsed.TotalSeconds,
            CheckedAtUtc = DateTime.UtcNow,
        };
        if (file != null) TryWrite(file, verdict);
        return verdict;
    }

    /// <summary>
    /// Everything that changes which kernels run or how they behave: CPU model and flags, the libtorch
    /// binary, the thread count and the oneDNN/MKL/OpenMP environment (e.g. ONEDNN_MAX_CPU_ISA).
    /// </summary>
    public static string MachineKey()
    {
        var cpu = CpuInfo.Current;
        var sb = new StringBuilder();
        sb.Append("check=").Append(KernelCheck.Version).Append('\n');
        sb.Append(cpu.Vendor).Append('|').Append(cpu.Model).Append('|').Append(cpu.Family).Append('|').Append(cpu.ModelNumber).Append('\n');
        sb.Append(string.Join(' ', cpu.Flags.Order(StringComparer.Ordinal))).Append('\n');
        sb.Append(LibTorchNative.NativePath()).Append('\n');
        sb.Append("threads=").Append(torch.get_num_threads()).Append('\n');
        foreach (var (name, value) in EnvironmentVariables(n => HasPrefix(n, "ONEDNN_", "DNNL_", "MKL_", "ATEN_") || n == "OMP_NUM_THREADS"))
            sb.Append(name).Append('=').Append(value).Append('\n');
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString()));
        return Convert.ToHexStringLower(hash)[..16];
    }

    /// <summary>The process's environment variables whose names pass <paramref name="include"/>, sorted by name.</summary>
    public static SortedDictionary<string, string> EnvironmentVariables(Func<string, bool> include)
    {
        var result = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry e in Environment.GetEnvironmentVariables())
            if (e.Key is string name && include(name)) result[name] = e.Value as string ?? "";
        return result;
    }

    public static bool HasPrefix(string name, params string[] prefixes) => prefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal));

    /// <summary>$SVGD_CACHE_DIR, else $XDG_CACHE_HOME/svgdiffusion, else ~/.cache/svgdiffusion; null without a home.</summary>
    public static string? CacheDirectory()
    {
        string? explicitDir = Environment.GetEnvironmentVariable("SVGD_CACHE_DIR");
        if (!string.IsNullOrEmpty(explicitDir)) return explicitDir;
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrEmpty(xdg)) return System.IO.Path.Combine(xdg, "svgdiffusion");
        string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return string.IsNullOrEmpty(home) ? null : System.IO.Path.Combine(home, ".cache", "svgdiffusion");
    }

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };

    static KernelVerdict? TryRead(string file, string key)
    {
        try
        {
            if (!File.Exists(file)) return null;
            var v = JsonSerializer.Deserialize<KernelVerdict>(File.ReadAllText(file), Json);
            // A verdict is only as good as its evidence: a hand-edited or truncated file is checked again.
            if (v == null || v.MachineKey != key || v.CheckVersion != KernelCheck.Version || v.Results.Count == 0) return null;
            if (v.AllPassed != v.Results.All(r => r.Passed) || !Candidates.Contains(v.Path)) return null;
            return v;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or NotSupportedException)
        {
            return null;
        }
    }

    static void TryWrite(string file, KernelVerdict v)
    {
        // The cache only saves the next process a fraction of a second: an unwritable one is not an error.
        try { AtomicFile.Write(file, fs => JsonSerializer.Serialize(fs, v, Json)); }
        catch (SvgdException) { }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }
}
