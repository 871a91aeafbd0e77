using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

public enum CheckpointFormat { SafeTensors, TorchZip, TorchLegacy }

/// <summary>
/// A checkpoint file of any supported container: safetensors, or a PyTorch zip pickle holding a state
/// dict directly or nested (<c>{"ema": ...}</c>, <c>{"state_dict": ...}</c>, <c>{"model", "ema", "opt"}</c>).
/// </summary>
public sealed class Checkpoint
{
    /// <summary>Sub-dictionaries tried, in order, when the caller names none and the top level is not a state dict.</summary>
    public static readonly string[] DefaultSections = { "ema", "state_dict", "model", "module", "teacher", "student" };

    public string Path { get; }
    public CheckpointFormat Format { get; }
    /// <summary>The unpickled tree (dictionaries keyed by string), or for safetensors the flat tensor dictionary.</summary>
    public object? Root { get; }
    /// <summary>safetensors <c>__metadata__</c>; empty for pickles.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    Checkpoint(string path, CheckpointFormat format, object? root, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path; Format = format; Root = root; Metadata = metadata;
    }

    public static Checkpoint Open(string path)
    {
        CheckpointFile.MustExist(path);
        if (SafeTensors.LooksLikeSafeTensors(path))
        {
            var header = SafeTensors.ReadHeader(path);
            var tensors = SafeTensors.Load(path);
            var root = tensors.ToDictionary(kv => (object)kv.Key, kv => (object?)kv.Value);
            return new Checkpoint(path, CheckpointFormat.SafeTensors, root, header.Metadata);
        }
        if (TorchPickle.IsZipPickle(path))
            return new Checkpoint(path, CheckpointFormat.TorchZip, TorchPickle.Load(path), new Dictionary<string, string>());
        if (TorchLegacyPickle.IsLegacyPickle(path))
            return new Checkpoint(path, CheckpointFormat.TorchLegacy, TorchLegacyPickle.Load(path), new Dictionary<string, string>());
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            SafeTensors.ReadHeader(path); // throws the precise reason
        throw new SvgdException($"{path}: unknown checkpoint container (neither safetensors nor a PyTorch zip archive or legacy torch.save file)");
    }

    /// <summary>Top-level entries of a nested container: name and a short description.</summary>
    public IReadOnlyList<(string Name, string Description)> Sections()
    {
        var list = new List<(string, string)>();
        if (Root is not Dictionary<object, object?> d) return list;
        foreach (var (k, v) in d)
            list.Add((k.ToString()!, Describe(v)));
        return list;
    }

    static string Describe(object? v) => v switch
    {
        Tensor t => $"tensor {Shape(t.shape)} {t.dtype}",
        Dictionary<object, object?> d => $"dict of {d.Count} ({CountTensors(d)} tensors)",
        List<object?> l => $"list of {l.Count}",
        object?[] t => $"tuple of {t.Length}",
        string s => $"\"{(s.Length > 40 ? s[..40] + "..." : s)}\"",
        null => "None",
        _ => v.ToString() ?? "?",
    };

    public static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";

    // A pickle can build a dictionary that contains itself; the depth bound keeps that a clean error.
    const int MaxNesting = 64;

    static int CountTensors(Dictionary<object, object?> d, int depth = 0) => depth > MaxNesting ? 0 : d.Values.Sum(v => v switch
    {
        Tensor => 1,
        Dictionary<object, object?> sub => CountTensors(sub, depth + 1),
        _ => 0,
    });

    static bool IsStateDict(Dictionary<object, object?> d) =>
        d.Count > 0 && d.Values.All(v => v is Tensor) ;

    /// <summary>
    /// The tensors of one state dict. <paramref name="section"/> selects a sub-dictionary by name (a dotted
    /// path for deeper nesting); null picks the top level when it is a state dict, else the first of
    /// <see cref="DefaultSections"/> present. <paramref name="stripPrefix"/> removes a key prefix and drops
    /// keys without it.
    /// </summary>
    public Dictionary<string, Tensor> StateDict(string? section = null, string? stripPrefix = null)
    {
        object? node = Root;
        string where = "top level";
        if (section != null)
        {
            foreach (var part in section.Split('.', StringSplitOptions.RemoveEmptyEntries))
            {
                if (node is not Dictionary<object, object?> d || !d.TryGetValue(part, out node))
                    throw new SvgdException($"{Path}: no section '{section}' (available: {string.Join(", ", Sections().Select(s => s.Name))})");
            }
            where = $"section '{section}'";
        }
        else if (Root is Dictionary<object, object?> top && !IsStateDict(top))
        {
            // A flat state dict may still contain a few non-tensor entries (e.g. version counters).
            int tensors = top.Values.Count(v => v is Tensor);
            var pick = DefaultSections.FirstOrDefault(s => top.TryGetValue(s, out var sub) && sub is Dictionary<object, object?>);
            if (pick != null && tensors == 0) { node = top[pick]; where = $"section '{pick}'"; }
        }
        if (node is not Dictionary<object, object?> dict)
            throw new SvgdException($"{Path}: {where} is not a dictionary of tensors");
        var result = new Dictionary<string, Tensor>();
        Flatten(dict, "", result, 0);
        if (result.Count == 0)
            throw new SvgdException($"{Path}: {where} holds no tensors (sections: {string.Join(", ", Sections().Select(s => s.Name))})");
        if (stripPrefix is { Length: > 0 })
        {
            result = result.Where(kv => kv.Key.StartsWith(stripPrefix, StringComparison.Ordinal))
                .ToDictionary(kv => kv.Key[stripPrefix.Length..], kv => kv.Value);
            if (result.Count == 0) throw new SvgdException($"{Path}: no key in {where} starts with '{stripPrefix}'");
        }
        return result;
    }

    void Flatten(Dictionary<object, object?> d, string prefix, Dictionary<string, Tensor> into, int depth)
    {
        if (depth > MaxNesting) throw new SvgdException($"{Path}: dictionaries nested more than {MaxNesting} deep (corrupt or self-referencing pickle)");
        foreach (var (k, v) in d)
        {
            string name = prefix + k;
            if (v is Tensor t) into[name] = t;
            else if (v is Dictionary<object, object?> sub && sub.Values.Any(x => x is Tensor or Dictionary<object, object?>))
                Flatten(sub, name + ".", into, depth + 1);
        }
    }

    public string FormatName => Format switch
    {
        CheckpointFormat.SafeTensors => "safetensors",
        CheckpointFormat.TorchZip => "PyTorch zip pickle",
        _ => "PyTorch legacy (pre-1.6) pickle",
    };

}

/// <summary>Opening checkpoint-like files with the failure named: a folder, a missing file, no permission.</summary>
public static class CheckpointFile
{
    public static void MustExist(string path)
    {
        if (Directory.Exists(path)) throw new SvgdException($"{path}: is a directory, not a file");
        if (!File.Exists(path)) throw new SvgdException($"{path}: no such file");
    }

    public static FileStream OpenRead(string path)
    {
        MustExist(path);
        try { return File.OpenRead(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new SvgdException($"{path}: cannot open ({e.Message})"); }
    }
}
