using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

/// <summary>
/// One-file training state: module weights under prefixes, optimiser states as byte blobs, and JSON
/// metadata, written atomically so a kill during a save leaves the previous checkpoint intact.
/// </summary>
public static class RunCheckpoint
{
    /// <summary>A metadata value of a training checkpoint, or one line naming the file and the missing key.</summary>
    public static string Metadata(IReadOnlyDictionary<string, string> meta, string key, string path) =>
        meta.TryGetValue(key, out var v) ? v : throw new SvgdException($"{path}: training checkpoint metadata lacks '{key}'");

    /// <summary>A config stored as JSON in the metadata; a damaged one is one line naming the file and key.</summary>
    public static T Config<T>(IReadOnlyDictionary<string, string> meta, string key, string path) =>
        SvgDiffusion.Config.ConfigJson.ParseText<T>(Metadata(meta, key, path), $"{path} metadata '{key}'");

    /// <summary>The step count stored in the metadata.</summary>
    public static int Step(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        string v = Metadata(meta, key, path);
        return int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int step)
            ? step : throw new SvgdException($"{path}: metadata '{key}' is '{v}', not a step number");
    }

    /// <summary>The number of processes that trained a run (1 when the checkpoint predates data-parallel training).</summary>
    public static int WorldSize(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        if (!meta.TryGetValue(key, out var v)) return 1;
        return int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n) && n > 0
            ? n : throw new SvgdException($"{path}: metadata '{key}' is '{v}', not a number of processes");
    }

    /// <summary>An optional JSON array of values in the metadata (class names, a shape); null when absent.</summary>
    public static List<T>? List<T>(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        if (!meta.TryGetValue(key, out var v)) return null;
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(v)?.AsArray().Select(x => x!.GetValue<T>()).ToList()
                   ?? throw new SvgdException($"{path}: metadata '{key}' is null, not a list");
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new SvgdException($"{path}: metadata '{key}' is not a JSON list of {typeof(T).Name} values");
        }
    }

    public static Tensor OptimizerBlob(OptimizerHelper optimizer)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(w);
        var bytes = ms.ToArray();
        var t = torch.empty(bytes.LongLength, dtype: ScalarType.Byte);
        bytes.CopyTo(t.bytes);
        return t;
    }

    public static void RestoreOptimizer(OptimizerHelper optimizer, Tensor blob, string source, string key)
    {
        try
        {
            using var ms = new MemoryStream(blob.bytes.ToArray());
            using var r = new BinaryReader(ms);
            optimizer.load_state_dict(r);
        }
        catch (Exception e) when (e is not SvgdException)
        {
            throw new SvgdException($"{source}: optimizer state '{key}' does not fit this run ({e.Message})");
        }
    }

    public static Dictionary<string, Tensor> Prefixed(string prefix, IEnumerable<KeyValuePair<string, Tensor>> sd) =>
        sd.ToDictionary(kv => prefix + kv.Key, kv => kv.Value);

    public static Dictionary<string, Tensor> Section(IReadOnlyDictionary<string, Tensor> sd, string prefix) =>
        sd.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);

    /// <summary>A generator whose draws are a function of (seed, step, stream) alone, so a resumed run
    /// draws exactly what an uninterrupted one would.</summary>
    public static Generator StepGenerator(long seed, long step, int stream)
    {
        unchecked
        {
            long s = seed * 1_000_003L + step * 7919L + stream * 104_729L + 12345L;
            return new Generator((ulong)(s & long.MaxValue));
        }
    }
}
