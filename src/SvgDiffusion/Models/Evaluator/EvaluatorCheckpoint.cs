using System.Globalization;
using System.Text.Json;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;

namespace SvgDiffusion.Models.Evaluator;

/// <summary>An evaluator's weights with its config, class names and measured test accuracy in the header.</summary>
public static class EvaluatorCheckpoint
{
    public const string KindValue = "svgd_evaluator";
    const string KindKey = "svgd.kind", ConfigKey = "svgd.evaluator_config", NamesKey = "svgd.class_names", AccuracyKey = "svgd.test_top1";

    /// <summary>The evaluator committed under <c>models/evaluator</c> and copied next to the CLI at build time.</summary>
    public static string BundledPath => Path.Combine(AppContext.BaseDirectory, "models", "evaluator", "fashion-mnist.safetensors");

    public static void Save(EvaluatorNet model, string path, IReadOnlyList<string>? classNames, double? testTop1)
    {
        var meta = new Dictionary<string, string>
        {
            ["format"] = "pt",
            [KindKey] = KindValue,
            [ConfigKey] = ConfigJson.Serialize(model.Config),
        };
        if (classNames != null) meta[NamesKey] = JsonSerializer.Serialize(classNames);
        if (testTop1 is double a) meta[AccuracyKey] = a.ToString("R", CultureInfo.InvariantCulture);
        SafeTensors.Save(path, model.state_dict(), meta);
    }

    public static (EvaluatorNet Model, IReadOnlyList<string>? ClassNames, double? TestTop1) Load(string path)
    {
        if (!File.Exists(path)) throw new SvgdException($"{path}: evaluator file not found");
        var header = SafeTensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue(KindKey, out var kind) || kind != KindValue)
            throw new SvgdException($"{path}: not an evaluator (no '{KindKey}: {KindValue}' metadata); train one with 'svgd train-evaluator'");
        if (!header.Metadata.TryGetValue(ConfigKey, out var json)) throw new SvgdException($"{path}: evaluator metadata lacks '{ConfigKey}'");
        var config = ConfigJson.ParseText<EvaluatorConfig>(json, $"{path} metadata '{ConfigKey}'").Validate(path);
        var model = new EvaluatorNet(config);
        StateDictLoader.Load(model, SafeTensors.Load(path), path);
        model.eval();
        string[]? names = null;
        if (header.Metadata.TryGetValue(NamesKey, out var n))
        {
            try { names = JsonSerializer.Deserialize<string[]>(n); }
            catch (JsonException) { throw new SvgdException($"{path}: metadata '{NamesKey}' is not a JSON array of strings"); }
        }
        double? acc = header.Metadata.TryGetValue(AccuracyKey, out var a) && double.TryParse(a, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : null;
        return (model, names, acc);
    }
}
