using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// NaN and Inf never travel silently: a diverged run, a corrupt file or a faulty kernel produces them,
/// and once saved or averaged they look like a result (blank images, "NaN" metrics). Each check is one
/// isfinite().all() per tensor, cheap beside the work that produced it.
/// </summary>
public static class Finite
{
    /// <summary>Whether every element is finite; integer and bool tensors always are.</summary>
    public static bool All(Tensor t)
    {
        if (!t.dtype.IsFloatingPoint()) return true;
        // Both disposed here, not at the end of a caller's dispose scope: checking a whole checkpoint would
        // otherwise hold one byte per element of every tensor (2.7 GB for an SVG-XL training checkpoint).
        using var finite = torch.isfinite(t);
        using var ok = finite.all();
        return ok.item<bool>();
    }

    /// <summary>The first key whose tensor holds NaN or Inf, or null.</summary>
    public static string? FirstBad(IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        foreach (var (k, t) in tensors)
            if (!All(t)) return k;
        return null;
    }

    /// <summary>Refuses weights with NaN/Inf; <paramref name="source"/> names the file in the message.</summary>
    public static void Weights(IEnumerable<KeyValuePair<string, Tensor>> tensors, string source)
    {
        if (FirstBad(tensors) is string key)
            throw new SvgdException($"{source}: tensor '{key}' holds NaN or Inf values (a diverged run or a damaged file); refusing to use it");
    }

    /// <summary>Returns <paramref name="t"/>, or refuses it when it holds NaN/Inf; <paramref name="what"/> is the subject of the message ("the sampled latents").</summary>
    public static Tensor Output(Tensor t, string what)
    {
        if (!All(t))
            throw new SvgdException($"{what} hold NaN or Inf values; nothing was written (check the model files, or run 'svgd doctor')");
        return t;
    }

    /// <summary>A metric for JSON: NaN and Inf become null, which every JSON reader accepts.</summary>
    public static double? OrNull(double v) => double.IsFinite(v) ? v : null;

    /// <summary>The first parameter whose gradient holds NaN or Inf, or null (parameters without a gradient are skipped).</summary>
    public static string? FirstBadGradient(IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> parameters)
    {
        foreach (var (name, p) in parameters)
            if (p.grad is Tensor g && !All(g)) return name;
        return null;
    }

    /// <summary>
    /// The one-line stop of a training run: which step and which quantity went non-finite. Thrown before the
    /// optimiser moves, so the weights in memory and every checkpoint written so far stay finite.
    /// </summary>
    public static SvgdException TrainingStop(int step, string what) =>
        new($"training stopped at step {step}: {what} is not finite (NaN or Inf); this step was not saved, the last checkpoint is unchanged (lower --lr, or use --grad-clip)");

    /// <summary>Refuses to write a checkpoint whose tensors hold NaN/Inf.</summary>
    public static void BeforeSave(IEnumerable<KeyValuePair<string, Tensor>> tensors, string path)
    {
        if (FirstBad(tensors) is string key)
            throw new SvgdException($"not writing {path}: tensor '{key}' holds NaN or Inf values; the previous checkpoint is unchanged");
    }

    /// <summary>
    /// JSON options for metrics files: a NaN or Inf double is written as null. System.Text.Json would
    /// otherwise throw, or with named literals write "NaN", which most JSON readers reject.
    /// </summary>
    public static System.Text.Json.JsonSerializerOptions MetricsJson { get; } = new()
    {
        WriteIndented = true,
        Converters = { new NonFiniteAsNull() },
    };

    sealed class NonFiniteAsNull : System.Text.Json.Serialization.JsonConverter<double>
    {
        public override double Read(ref System.Text.Json.Utf8JsonReader reader, Type typeToConvert, System.Text.Json.JsonSerializerOptions options) =>
            reader.TokenType == System.Text.Json.JsonTokenType.Null ? double.NaN : reader.GetDouble();

        public override void Write(System.Text.Json.Utf8JsonWriter writer, double value, System.Text.Json.JsonSerializerOptions options)
        {
            if (double.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }
}
