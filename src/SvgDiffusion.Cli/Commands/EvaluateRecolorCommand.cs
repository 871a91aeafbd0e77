using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary><c>svgd evaluate-recolor</c>: recolour against mix, SDEdit-of-mix and vary on the emoji colour families.</summary>
internal static class EvaluateRecolorCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        var data = new Option<string>("--data") { Description = "An 'svgd import-emoji' folder (captions.jsonl names the colour families).", Required = true }.InputPath();
        var vendor = new Option<string>("--vendor") { Description = "Whose images: the held-out vendor of the model's training (twitter for the bundled emoji model).", DefaultValueFactory = _ => "twitter" };
        var strengths = new Option<string>("--strengths") { Description = "Strengths swept for recolor, SDEdit-of-mix and vary (comma-separated).", DefaultValueFactory = _ => "0.1,0.3" };
        var referenceVendor = new Option<string?>("--reference-vendor") { Description = "Take each target variant from this vendor instead (another artist's drawing, not aligned with the source, like a user's reference): e.g. google." };
        var people = new Option<int>("--skin-tone-people") { Description = "People/hands whose lightest and darkest skin tones are paired.", DefaultValueFactory = _ => 12 };
        var output = new Option<string>("--out") { Description = "Folder: measures.jsonl (every edit), summary.json, summary.md (tables) and strips.png (each family's first pair: source, target, mix, then each method at each strength).", Required = true }.OutputDir();
        var precision = PrecisionOption.Create();
        var cmd = new Command("evaluate-recolor", "Measure recolouring on the emoji colour families (hearts, circles, squares, books, skin tones, cats): shape kept (foreground IoU, frozen-feature cosine) and colour moved (hue-histogram distance to the target variant), against mix, SDEdit of the mixed latent and vary.")
        { data, vendor, referenceVendor, strengths, people, output, precision };
        foreach (var o in models.Options()) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var list = ClassLabels.Split(p.GetValue(strengths)!, "--strengths").Select(x =>
                double.TryParse(x, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) ? v : throw new SvgdException($"--strengths: '{x}' is not a number")).ToList();
            foreach (var s in list) GenerationRequest.ValidateStrength(s, "--");
            var pairs = ColourFamilies.Pairs(p.GetValue(data)!, p.GetValue(vendor)!, p.GetValue(people), p.GetValue(referenceVendor));
            if (pairs.Count == 0) throw new SvgdException($"{p.GetValue(data)}: no colour-family pairs of vendor '{p.GetValue(vendor)}'");
            var request = models.DiT.Request(p, n: 1, precision: p.GetValue(precision));
            request.Validate(models.DiT.Limits(p), "--");
            var dtype = PrecisionOption.Parse(p, precision);
            using var loaded = models.Load(p, cli, dtype);
            var plan = loaded.Service.Plan(request, models.DiT.Limits(p), "--", unconditionalByDefault: true, classesField: "class");
            var bg = loaded.Service.Background ?? (255, 255, 255);
            string outDir = p.GetValue(output)!;
            Directory.CreateDirectory(outDir);
            var strips = new List<Tensor>();
            var seen = new HashSet<string>();
            IReadOnlyList<RecolorMeasure> measures = Array.Empty<RecolorMeasure>();
            var sw = System.Diagnostics.Stopwatch.StartNew();
            ProgressBars.Run(cli.Console, "recolour pairs", pairs.Count, step =>
                measures = new RecolorEvaluation(loaded.Service, bg).Run(pairs, list, plan, n => step(n), (pair, images) =>
                {
                    if (seen.Add(pair.Family)) strips.Add(torch.stack(images.Select(i => i.Image * 2 - 1).ToArray()).MoveToOuterDisposeScope());
                }));
            var summary = RecolorEvaluation.Summarise(measures);
            var json = new JsonSerializerOptions { WriteIndented = false };
            Checkpoints.AtomicFile.Write(Path.Combine(outDir, "measures.jsonl"), fs =>
            {
                using var w = new StreamWriter(fs, new UTF8Encoding(false), leaveOpen: true);
                foreach (var m in measures) w.WriteLine(JsonSerializer.Serialize(m, json));
            });
            Checkpoints.AtomicFile.Write(Path.Combine(outDir, "summary.json"), fs => JsonSerializer.Serialize(fs, summary, new JsonSerializerOptions { WriteIndented = true }));
            string table = Table(summary, pairs.Count, sw.Elapsed);
            Checkpoints.AtomicFile.Write(Path.Combine(outDir, "summary.md"), fs => { using var w = new StreamWriter(fs, new UTF8Encoding(false), leaveOpen: true); w.Write(table); });
            if (strips.Count > 0)
            {
                int columns = (int)strips[0].shape[0];
                using var all = torch.cat(strips, 0);
                using var grid = ImageFiles.Grid(all, columns);
                ImageFiles.SavePng(grid, Path.Combine(outDir, "strips.png"));
            }
            cli.Console.WriteLine(table);
            cli.Console.MarkupLine($"{pairs.Count} pairs in {sw.Elapsed.TotalMinutes:F1} min: wrote [bold]{Markup.Escape(outDir)}[/]");
            return 0;
        }));
        return cmd;
    }

    static string Table(IReadOnlyList<RecolorSummary> summary, int pairs, TimeSpan elapsed)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"Recolouring {pairs} pairs (source -> target variant of the same shape); IoU: foreground masks of source and edit; cos: frozen features of source and edit; hue TV: hue-histogram distance of the edit to the target (source's own distance in brackets); moved: share of edits whose mean foreground colour is nearer the target's than the source's is.");
        sb.AppendLine();
        sb.AppendLine("| family | method | strength | pairs | IoU | cos | hue TV (source) | moved |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        foreach (var s in summary.OrderBy(s => s.Family == "all" ? 1 : 0).ThenBy(s => s.Family, StringComparer.Ordinal).ThenBy(s => s.Method, StringComparer.Ordinal).ThenBy(s => s.Strength))
            sb.AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"| {s.Family} | {s.Method} | {(s.Method == RecolorEvaluation.Mix ? "-" : s.Strength.ToString("0.##", CultureInfo.InvariantCulture))} | {s.Pairs} | {s.IoU:F3} | {s.SemanticCosine:F3} | {s.HueDistance:F3} ({s.SourceHueDistance:F3}) | {s.ColourMovedFraction:P0} |"));
        return sb.ToString();
    }
}
