using System.IO.Compression;
using SvgDiffusion.Checkpoints;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// numpy's <c>.npz</c>: a zip (stored or deflated, as <c>np.savez</c> / <c>np.savez_compressed</c> write)
/// of <c>name.npy</c> entries. Arrays are read one at a time on request, so a reference batch holding
/// gigabytes of images next to its statistics costs only the arrays asked for.
/// </summary>
public sealed class NpzArchive : IDisposable
{
    readonly ZipArchive _zip;
    readonly Dictionary<string, ZipArchiveEntry> _entries = new();

    public string Path { get; }
    /// <summary>Array names in file order (entry names without <c>.npy</c>).</summary>
    public IReadOnlyList<string> Names { get; }

    NpzArchive(string path, ZipArchive zip)
    {
        Path = path;
        _zip = zip;
        var names = new List<string>();
        foreach (var e in zip.Entries)
        {
            if (e.FullName.EndsWith('/')) continue;
            string name = e.FullName.EndsWith(".npy", StringComparison.Ordinal) ? e.FullName[..^4] : e.FullName;
            _entries[name] = e;
            names.Add(name);
        }
        Names = names;
    }

    public static NpzArchive Open(string path)
    {
        CheckpointFile.MustExist(path);
        try { return new NpzArchive(path, ZipFile.OpenRead(path)); }
        catch (Exception e) when (e is InvalidDataException or NotSupportedException or ArgumentException)
        { throw new SvgdException($"{path}: not a valid .npz file (not a readable zip archive: {e.Message.Split('\n')[0].Trim()})", e); }
        catch (IOException e) { throw new SvgdException($"{path}: cannot read ({e.Message})", e); }
    }

    public bool Contains(string name) => _entries.ContainsKey(name);

    ZipArchiveEntry Entry(string name) => _entries.TryGetValue(name, out var e) ? e
        : throw new SvgdException($"{Path}: no array '{name}' (arrays: {string.Join(", ", Names)})");

    /// <summary>The header of array <paramref name="name"/>, without reading its data.</summary>
    public NpyHeader Header(string name)
    {
        using var s = OpenEntry(name);
        return Npy.ReadHeader(s, $"{Path}:{name}");
    }

    public Tensor Read(string name)
    {
        using var s = OpenEntry(name);
        var t = Npy.Read(s, $"{Path}:{name}");
        try { ZipEntries.ReadToEnd(s); }
        catch { t.Dispose(); throw; }
        return t;
    }

    Stream OpenEntry(string name) => ZipEntries.Open(Entry(name), Path);

    public void Dispose() => _zip.Dispose();
}

/// <summary>Whole-file <c>.npz</c> reads and atomic writes.</summary>
public static class Npz
{
    /// <summary>All arrays (or the named ones), in file order.</summary>
    public static Dictionary<string, Tensor> Load(string path, IEnumerable<string>? names = null)
    {
        using var npz = NpzArchive.Open(path);
        var result = new Dictionary<string, Tensor>();
        foreach (var n in names ?? npz.Names) result[n] = npz.Read(n);
        return result;
    }

    /// <summary>Writes <c>name.npy</c> entries (as <c>np.savez</c>, or deflated as <c>np.savez_compressed</c>); the file appears atomically.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> arrays, bool compress = false)
    {
        var list = arrays.ToList();
        var dup = list.GroupBy(kv => kv.Key).FirstOrDefault(g => g.Count() > 1);
        if (dup != null) throw new SvgdException($"{path}: array name '{dup.Key}' given twice");
        AtomicFile.Write(path, fs =>
        {
            using var zip = new ZipArchive(fs, ZipArchiveMode.Create, leaveOpen: true);
            foreach (var (name, t) in list)
            {
                var entry = zip.CreateEntry(name + ".npy", compress ? CompressionLevel.Optimal : CompressionLevel.NoCompression);
                using var s = entry.Open();
                Npy.Write(s, t);
            }
        });
    }
}
