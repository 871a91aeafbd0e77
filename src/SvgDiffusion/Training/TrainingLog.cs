using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SvgDiffusion.Evaluation;

namespace SvgDiffusion.Training;

/// <summary>
/// A run's per-step metrics as JSON lines (<c>metrics.jsonl</c>: one object per logged step with a
/// <c>step</c> field), and a loss-curve PNG drawn from them, so every run can be looked at, not only read.
/// Opening a log at step s drops the lines past s that a killed run wrote after its last checkpoint, so
/// a resumed run's log holds each step once.
/// </summary>
public sealed class TrainingLog
{
    public string Path { get; }
    readonly List<JsonObject> _rows = new();

    public TrainingLog(string path, int resumeStep)
    {
        Path = path;
        if (File.Exists(path))
        {
            foreach (var line in File.ReadLines(path))
            {
                if (string.IsNullOrWhiteSpace(line)) continue;
                JsonObject? row;
                try { row = JsonNode.Parse(line) as JsonObject; }
                catch (JsonException) { break; }   // a line cut by a kill ends the usable log
                if (row?["step"] is JsonValue v && v.TryGetValue(out int step) && step <= resumeStep) _rows.Add(row);
                else break;
            }
        }
        Rewrite();
    }

    public IReadOnlyList<JsonObject> Rows => _rows;

    public void Add(int step, IReadOnlyDictionary<string, double> values)
    {
        var row = new JsonObject { ["step"] = step };
        foreach (var (k, v) in values) row[k] = double.IsFinite(v) ? v : null;
        _rows.Add(row);
        File.AppendAllText(Path, row.ToJsonString() + "\n");
    }

    void Rewrite() =>
        Checkpoints.AtomicFile.Write(Path, fs =>
        {
            using var w = new StreamWriter(fs, leaveOpen: true);
            foreach (var r in _rows) w.Write(r.ToJsonString() + "\n");
        });

    /// <summary>The logged values of <paramref name="keys"/> against step, one line each (a moving average over
    /// <paramref name="smooth"/> steps keeps noisy per-step losses readable).</summary>
    public void Plot(string pngPath, string title, IReadOnlyList<string> keys, int smooth = 1, bool logY = false)
    {
        var series = new List<PlotSeries>();
        foreach (var key in keys)
        {
            var pts = _rows.Where(r => r[key] is JsonValue).Select(r => ((double)r["step"]!.GetValue<int>(), r[key]!.GetValue<double>())).ToList();
            if (pts.Count == 0) continue;
            var ys = pts.Select(p => p.Item2).ToList();
            // Only dense series are smoothed: a value logged once per epoch is drawn as it is.
            bool smoothed = smooth > 1 && pts.Count > 4 * smooth;
            if (smoothed) ys = ys.Select((_, i) => ys.Skip(Math.Max(0, i - smooth + 1)).Take(Math.Min(smooth, i + 1)).Average()).ToList();
            series.Add(new PlotSeries(smoothed ? $"{key} (mean of {smooth})" : key, pts.Select(p => p.Item1).ToList(), ys));
        }
        if (series.Count > 0) Plots.Lines(pngPath, title, "step", logY ? "value (log)" : "value", series, logY: logY);
    }

}
