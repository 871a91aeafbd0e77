using System.Diagnostics;

namespace SvgDiffusion.Checkpoints;

/// <summary>
/// Writes a file through a temporary sibling and a rename, so readers never see half a file. Only regular files
/// are written (<see cref="OutputTarget"/>): a device node, FIFO or socket is refused, a symbolic link is written
/// through to its final target and stays a link.
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<FileStream> write)
    {
        string full = OutputTarget.Resolve(path);
        string? dir = Path.GetDirectoryName(full);
        if (!string.IsNullOrEmpty(dir)) Directory.CreateDirectory(dir);
        RemoveLeftovers(full);
        string tmp = TempPrefix(full) + $"{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e)
        {
            try { File.Delete(tmp); } catch (IOException) { }
            if (e is IOException or UnauthorizedAccessException) throw new SvgdException($"{path}: cannot write ({e.Message})", e);
            throw;
        }
    }

    static string TempPrefix(string full) => full + ".tmp-";

    /// <summary>
    /// Deletes temporary siblings (<c>name.tmp-PID-GUID</c>) that a killed writer left behind: those of processes
    /// that no longer run. A live other process may be writing its own right now and is left alone; this process
    /// writes one file at a time per path, so its own leftovers are from a write that failed.
    /// </summary>
    /// <returns>The number of files removed.</returns>
    public static int RemoveLeftovers(string path)
    {
        string full = Path.GetFullPath(path);
        string? dir = Path.GetDirectoryName(full);
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir)) return 0;
        string prefix = Path.GetFileName(TempPrefix(full));
        int removed = 0;
        IEnumerable<string> candidates;
        try { candidates = Directory.EnumerateFiles(dir, prefix + "*").ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
        foreach (var f in candidates)
        {
            string rest = Path.GetFileName(f)[prefix.Length..];
            int dash = rest.IndexOf('-');
            // Only names this class makes: PID, a dash, a 32-digit GUID.
            if (dash <= 0 || !int.TryParse(rest[..dash], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid)
                || rest.Length - dash - 1 != 32 || !rest[(dash + 1)..].All(Uri.IsHexDigit))
                continue;
            if (pid != Environment.ProcessId && IsRunning(pid)) continue;
            try { File.Delete(f); removed++; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        }
        return removed;
    }

    static bool IsRunning(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }      // no such process
        catch (InvalidOperationException) { return false; }
        catch (System.ComponentModel.Win32Exception) { return true; } // exists, but not ours to inspect
    }
}
