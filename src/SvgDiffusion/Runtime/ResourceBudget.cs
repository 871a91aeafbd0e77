using System.Globalization;

namespace SvgDiffusion.Runtime;

/// <summary>
/// The check every front end makes before work starts: the estimated peak memory of a run against what this
/// machine (or its container's memory limit) has available, and its size against ceilings no sane request
/// reaches. A refusal is one line naming the option at fault, the estimate and the limit, and how to override
/// it (<see cref="OverrideOption"/>) for people who mean it; memory beyond what is available is refused even
/// then, since the kernel's OOM killer would end the run without a word.
/// </summary>
public static class ResourceBudget
{
    /// <summary>The CLI flag that lifts the work ceilings.</summary>
    public const string OverrideOption = "--allow-large";

    /// <summary>The fraction of available memory a run may plan to use: the rest is for the allocator's slack,
    /// the page cache of the files being read and whatever else runs.</summary>
    public const double UsableFraction = 0.9;

    /// <summary>SVGD_MEMORY_LIMIT (bytes, or with a K/M/G suffix) replaces the machine's reading: tests and
    /// people sharing a machine use it to plan for less than is free now.</summary>
    public const string LimitVariable = "SVGD_MEMORY_LIMIT";

    /// <summary>
    /// Bytes this process can still allocate without swapping or being killed: the kernel's MemAvailable, lowered
    /// to the container's memory limit less its usage (cgroup v2 <c>memory.max</c>, v1 <c>memory.limit_in_bytes</c>)
    /// where one is set, or <see cref="LimitVariable"/> when given.
    /// </summary>
    public static long AvailableMemoryBytes()
    {
        if (Environment.GetEnvironmentVariable(LimitVariable) is { Length: > 0 } set)
            return ParseBytes(set) ?? throw new SvgdException($"{LimitVariable}='{set}' is not a number of bytes (e.g. 8G, 512M, 1073741824)");
        long available = MemInfo("MemAvailable:") ?? long.MaxValue;
        if (CgroupHeadroom() is long room) available = Math.Min(available, room);
        return available;
    }

    /// <summary>Refuses a run whose estimated peak (<paramref name="bytes"/>) does not fit in available memory.</summary>
    /// <param name="what">The run, as the user said it ("sampling 64 images of 256 px").</param>
    /// <param name="option">The option that makes it large, to name in the line ("--n", "--batch-size").</param>
    public static void RequireMemory(string what, long bytes, string option) => RequireMemory(what, bytes, option, held: 0);

    /// <summary>
    /// As <see cref="RequireMemory(string, long, string)"/> for a process that already holds <paramref name="held"/>
    /// bytes of the estimated peak (its own resident set, models already loaded): only the rest must be available.
    /// </summary>
    public static void RequireMemory(string what, long bytes, string option, long held)
    {
        long avail = AvailableMemoryBytes();
        long usable = avail == long.MaxValue ? long.MaxValue : (long)(avail * UsableFraction);
        long more = Math.Max(0, bytes - Math.Max(0, held));
        if (more > usable)
            throw new SvgdException($"{option}: {what} needs about {Gib(bytes)} of memory{(held > 0 ? $" ({Gib(more)} more than this process holds)" : "")}, " +
                                    $"more than the {Gib(usable)} this machine has available ({Gib(avail)} free, {UsableFraction:P0} usable); lower {option}");
    }

    /// <summary>Refuses <paramref name="value"/> of <paramref name="option"/> above <paramref name="ceiling"/> unless the override was given.</summary>
    public static void RequireAtMost(string option, long value, long ceiling, bool allowLarge, string unit = "")
    {
        if (value > ceiling && !allowLarge)
            throw new SvgdException($"{option} {value.ToString(CultureInfo.InvariantCulture)}{unit} is more than the limit of {ceiling.ToString("N0", CultureInfo.InvariantCulture)}{unit}; " +
                                    $"pass {OverrideOption} if you mean it");
    }

    /// <summary>"3.2 GiB", "512 MiB": sizes in the messages.</summary>
    public static string Gib(long bytes) =>
        bytes == long.MaxValue ? "unlimited"
        : bytes >= 1L << 30 ? (bytes / (double)(1L << 30)).ToString("0.0", CultureInfo.InvariantCulture) + " GiB"
        : (bytes / (double)(1L << 20)).ToString("0", CultureInfo.InvariantCulture) + " MiB";

    /// <summary>Bytes from "123", "64K", "512M", "8G", "1T" (binary units); null when not such a number.</summary>
    public static long? ParseBytes(string s)
    {
        s = s.Trim();
        long scale = 1;
        if (s.Length > 0 && char.IsLetter(s[^1]))
        {
            scale = char.ToUpperInvariant(s[^1]) switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 0 };
            if (scale == 0) return null;
            s = s[..^1];
        }
        if (!double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v) || v < 0 || v * scale > long.MaxValue / 2.0)
            return null;
        return (long)(v * scale);
    }

    static long? MemInfo(string key) => ProcKilobytes("/proc/meminfo", key);

    /// <summary>A "Key:   123 kB" line of a /proc file (meminfo, self/status) in bytes; null when absent or unreadable.</summary>
    internal static long? ProcKilobytes(string file, string key)
    {
        try
        {
            foreach (var line in File.ReadLines(file))
                if (line.StartsWith(key, StringComparison.Ordinal)
                    && long.TryParse(line[key.Length..].Trim().Split(' ')[0], NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                    return kb * 1024;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>The container's limit less its usage, from the cgroup this process is in; null without a limit.</summary>
    static long? CgroupHeadroom()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/cgroup"))
            {
                var parts = line.Split(':', 3);
                if (parts.Length != 3) continue;
                string rel = parts[2].TrimStart('/');
                if (parts[0] == "0" && parts[1] == "")
                {
                    if (Headroom(Path.Combine("/sys/fs/cgroup", rel), "memory.max", "memory.current") is long v2) return v2;
                }
                else if (parts[1].Split(',').Contains("memory"))
                {
                    if (Headroom(Path.Combine("/sys/fs/cgroup/memory", rel), "memory.limit_in_bytes", "memory.usage_in_bytes") is long v1) return v1;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }

    static long? Headroom(string dir, string limitFile, string usageFile)
    {
        string lim = Path.Combine(dir, limitFile), use = Path.Combine(dir, usageFile);
        if (!File.Exists(lim) || !File.Exists(use)) return null;
        string l = File.ReadAllText(lim).Trim();
        // "max" (v2) or a page-rounded LONG_MAX (v1): no limit.
        if (l == "max" || !long.TryParse(l, NumberStyles.None, CultureInfo.InvariantCulture, out long limit) || limit >= 1L << 60) return null;
        return long.TryParse(File.ReadAllText(use).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long used)
            ? Math.Max(0, limit - used) : null;
    }
}
