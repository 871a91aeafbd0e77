using System.Globalization;
using System.Runtime.InteropServices;

namespace SvgDiffusion.Runtime;

/// <summary>
/// This process's memory as the kernel counts it (<c>/proc/self/status</c>: VmRSS now, VmHWM the peak) and
/// as glibc's heap holds it (<c>mallinfo2</c>: bytes in use and bytes freed but kept, which
/// <see cref="MallocTuning"/> never returns). The peak can be reset (<c>/proc/self/clear_refs</c>), so a
/// phase's own peak is measurable: <see cref="Phase"/>. All readings are 0 where the source is missing
/// (not Linux, not glibc).
/// </summary>
public static partial class ProcessMemory
{
    /// <summary>Resident set now, in bytes.</summary>
    public static long ResidentBytes() => Status("VmRSS:");

    /// <summary>Peak resident set since the process started or the last <see cref="ResetPeak"/>.</summary>
    public static long PeakResidentBytes() => Status("VmHWM:");

    /// <summary>Starts a new peak at the present resident set; false where the kernel does not allow it.</summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException) { return false; }
    }

    /// <summary>glibc's heap: bytes handed out (in use, including its own mmapped blocks) and bytes freed but kept.</summary>
    public static (long InUse, long Free) Heap()
    {
        if (!OperatingSystem.IsLinux()) return (0, 0);
        try
        {
            var m = mallinfo2();
            return ((long)(m.uordblks + m.hblkhd), (long)m.fordblks);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return (0, 0); }
    }

    /// <summary>
    /// Measures the peak resident set of what runs until the result is disposed: the peak is reset at the start
    /// (when the kernel allows; otherwise the process peak so far is the reading).
    /// </summary>
    public static PhaseMeter Phase() => new();

    /// <summary>A phase in progress: its start and its peak so far.</summary>
    public sealed class PhaseMeter
    {
        internal PhaseMeter()
        {
            StartBytes = ResidentBytes();
            Exact = ResetPeak();
        }

        /// <summary>Resident set when the phase started.</summary>
        public long StartBytes { get; }

        /// <summary>False where the peak could not be reset, so <see cref="PeakBytes"/> is the process's peak so far.</summary>
        public bool Exact { get; }

        /// <summary>Peak resident set during the phase (the process's since start where not <see cref="Exact"/>).</summary>
        public long PeakBytes => Math.Max(StartBytes, PeakResidentBytes());
    }

    static long Status(string key) => ResourceBudget.ProcKilobytes("/proc/self/status", key) ?? 0;

    [StructLayout(LayoutKind.Sequential)]
    struct MallInfo2
    {
        public nuint arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
    }

    [LibraryImport("libc.so.6")]
    private static partial MallInfo2 mallinfo2();
}
