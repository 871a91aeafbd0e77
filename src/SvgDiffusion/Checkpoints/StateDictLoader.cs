using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Checkpoints;

/// <summary>Copies a state dict into a module, reporting every disagreement by name in one error.</summary>
public static class StateDictLoader
{
    /// <param name="source">Names the file in messages.</param>
    /// <param name="ignore">Checkpoint keys that are expected and deliberately unused.</param>
    public static void Load(nn.Module module, IReadOnlyDictionary<string, Tensor> stateDict, string source, Func<string, bool>? ignore = null)
    {
        var target = module.state_dict();
        var missing = target.Keys.Where(k => !stateDict.ContainsKey(k)).ToList();
        var unexpected = stateDict.Keys.Where(k => !target.ContainsKey(k) && !(ignore?.Invoke(k) ?? false)).ToList();
        var mismatched = new List<string>();
        foreach (var (k, dst) in target)
        {
            if (!stateDict.TryGetValue(k, out var src)) continue;
            if (!src.shape.SequenceEqual(dst.shape))
                mismatched.Add($"{k}: checkpoint {Checkpoint.Shape(src.shape)} vs model {Checkpoint.Shape(dst.shape)}");
            else if (src.dtype.IsFloatingPoint() != dst.dtype.IsFloatingPoint() || (src.dtype == ScalarType.Bool) != (dst.dtype == ScalarType.Bool))
                mismatched.Add($"{k}: checkpoint dtype {src.dtype} vs model {dst.dtype}");
        }
        if (missing.Count + unexpected.Count + mismatched.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"{missing.Count} missing key(s): {Abbrev(missing)}");
            if (unexpected.Count > 0) parts.Add($"{unexpected.Count} unexpected key(s): {Abbrev(unexpected)}");
            if (mismatched.Count > 0) parts.Add($"{mismatched.Count} mismatch(es): {Abbrev(mismatched)}");
            throw new SvgdException($"{source}: does not fit {module.GetName()}: {string.Join("; ", parts)}");
        }
        // Every model reaches its weights through here: NaN/Inf weights would otherwise sample or decode "successfully" into blank images.
        Runtime.Finite.Weights(target.Keys.Select(k => new KeyValuePair<string, Tensor>(k, stateDict[k])), source);
        using var _ = torch.no_grad();
        foreach (var (k, dst) in target)
        {
            var src = stateDict[k];
            dst.copy_(src.dtype == dst.dtype ? src : src.to(dst.dtype));
        }
    }

    static string Abbrev(List<string> items, int max = 12) =>
        string.Join(", ", items.Take(max)) + (items.Count > max ? $", ... ({items.Count - max} more)" : "");

    public static bool IsFloatingPoint(this ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.Float16 or ScalarType.BFloat16;
}
