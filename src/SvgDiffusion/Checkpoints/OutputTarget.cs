using System.Runtime.InteropServices;

namespace SvgDiffusion.Checkpoints;

/// <summary>
/// The output rule of every command and of the server: svgd writes regular files only. A device node, FIFO or
/// socket named as an output is refused with one line (writing a PNG "to /dev/null" would otherwise rename a
/// temporary file over the device node). A symbolic link is written through: the file it finally points to is
/// replaced atomically and the link itself stays, as <c>cp</c> and shell redirection do; a dangling link
/// creates its target.
/// </summary>
public static partial class OutputTarget
{
    public enum Kind { Missing, Regular, Directory, CharDevice, BlockDevice, Fifo, Socket, Other }

    /// <summary>
    /// The path that will really be written for <paramref name="path"/>: itself, or the final target of the
    /// symbolic links it goes through. Refuses an empty path, a folder and anything that is not a regular file.
    /// </summary>
    /// <param name="name">How the caller names the output in errors ("--out", "image").</param>
    public static string Resolve(string path, string? name = null)
    {
        string label = name != null ? $"{name} {path}" : path;
        if (string.IsNullOrWhiteSpace(path)) throw new SvgdException($"{name ?? "output"}: the path is empty");
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        { throw new SvgdException($"{label}: not a usable path ({e.Message.Split('\n')[0].TrimEnd('.')})"); }
        string target = full;
        if (IsSymlink(full))
        {
            try { target = File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full; }
            catch (IOException e) { throw new SvgdException($"{label}: the symbolic link cannot be followed ({e.Message.Split('\n')[0].TrimEnd('.')})"); }
        }
        switch (KindOf(target))
        {
            case Kind.Missing or Kind.Regular: return target;
            case Kind.Directory: throw new SvgdException($"{label}: is a folder, expected a file name");
            case var k: throw new SvgdException($"{label}: is {Describe(k)}{(target != full ? $" (through the link to {target})" : "")}, not a regular file; svgd writes only regular files");
        }
    }

    /// <summary>Refuses a folder output that exists as something other than a folder (or a link to one).</summary>
    public static void CheckFolder(string path, string? name = null)
    {
        string label = name != null ? $"{name} {path}" : path;
        if (string.IsNullOrWhiteSpace(path)) throw new SvgdException($"{name ?? "output folder"}: the path is empty");
        switch (KindOf(Path.GetFullPath(path)))
        {
            case Kind.Missing or Kind.Directory: return;
            case Kind.Regular: throw new SvgdException($"{label}: is a file, expected a folder");
            case var k: throw new SvgdException($"{label}: is {Describe(k)}, not a folder");
        }
    }

    static string Describe(Kind k) => k switch
    {
        Kind.CharDevice => "a character device",
        Kind.BlockDevice => "a block device",
        Kind.Fifo => "a FIFO (named pipe)",
        Kind.Socket => "a socket",
        _ => "a special file",
    };

    static bool IsSymlink(string full)
    {
        try { return new FileInfo(full).LinkTarget != null; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    /// <summary>The type of what <paramref name="full"/> names, following symbolic links (stat, not lstat).</summary>
    public static Kind KindOf(string full)
    {
        if (!OperatingSystem.IsLinux())
            return Directory.Exists(full) ? Kind.Directory : File.Exists(full) ? Kind.Regular : Kind.Missing;
        Span<byte> buffer = stackalloc byte[256];
        int rc = Statx(AtFdCwd, full, 0, StatxType, ref MemoryMarshal.GetReference(buffer));
        if (rc != 0)
        {
            // ENOENT / ENOTDIR: nothing there (yet); anything else (EACCES) is left to the write to report.
            return Kind.Missing;
        }
        // struct statx: stx_mode (u16) at byte 28, the same on every architecture.
        int mode = BitConverter.ToUInt16(buffer.Slice(28, 2)) & 0xF000;
        return mode switch
        {
            0x8000 => Kind.Regular,
            0x4000 => Kind.Directory,
            0x2000 => Kind.CharDevice,
            0x6000 => Kind.BlockDevice,
            0x1000 => Kind.Fifo,
            0xC000 => Kind.Socket,
            _ => Kind.Other,
        };
    }

    const int AtFdCwd = -100;
    const uint StatxType = 0x1;

    [LibraryImport("libc.so.6", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Statx(int dirfd, string path, int flags, uint mask, ref byte buffer);
}
