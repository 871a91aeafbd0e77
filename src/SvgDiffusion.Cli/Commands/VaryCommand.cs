using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;

namespace SvgDiffusion.Cli.Commands;

internal static class VaryCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        var image = new Argument<string>("image") { Description = "The image to vary." }.InputPath();
        var strength = new Option<double>("--strength") { Description = "The fraction of the sampling schedule that is run, as in diffusers' img2img, in [0.001, 1]: the image's latent is noised to where that part starts. 0.05-0.2 keeps the shape and changes details, 0.3-0.5 keeps the class and pose loosely, 1 ignores the image.", DefaultValueFactory = _ => GenerationRequest.DefaultStrength };
        var cls = new Option<string?>("--class") { Description = "Class to steer towards, an index or a name (default: unconditional)." };
        var n = new Option<int>("--n") { Description = "Number of variations (sample i's noise depends on (seed, i)).", DefaultValueFactory = _ => 4 };
        var output = new Option<string?>("--out") { Description = "PNG grid of the variations." }.OutputFile();
        var outDir = new Option<string?>("--out-dir") { Description = "Folder for one PNG per variation." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("vary", "SDEdit-style variations: noise the image's SVG latent to where the last --strength of the sampling schedule starts, then integrate back with the DiT.")
        { image, strength, cls, n, output, outDir, precision };
        foreach (var o in models.Options()) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            if (p.GetValue(output) == null && p.GetValue(outDir) == null) throw new SvgdException("give --out (a grid) and/or --out-dir (one PNG per variation)");
            var request = models.DiT.Request(p, classes: p.GetValue(cls), n: p.GetValue(n), precision: p.GetValue(precision));
            request.Validate(models.DiT.Limits(p), "--");
            var dtype = PrecisionOption.Parse(p, precision);
            using var rgba = ImageFiles.LoadRgba(p.GetValue(image)!);
            using var loaded = models.Load(p, cli, dtype);
            using var rgb = ImageFiles.ToRgb(rgba, loaded.Service.Background);
            var plan = loaded.Service.Plan(request, models.DiT.Limits(p), "--", unconditionalByDefault: true, classesField: "class");
            double s = p.GetValue(strength);
            using var result = ProgressBars.Track(cli.Console, "sampling", GenerationService.Work(plan.Count, plan.Sampler.Steps, true),
                report => loaded.Service.Vary(rgb, s, plan, report));
            if (p.GetValue(outDir) is string dir)
                for (int i = 0; i < plan.Count; i++) ImageFiles.SavePng(result.Images![i], Path.Combine(dir, $"variation-{i:D3}.png"));
            if (p.GetValue(output) is string o)
            {
                using var grid = result.Grid();
                ImageFiles.SavePng(grid, o);
            }
            cli.Console.MarkupLine($"{plan.Count} variations (strength {s.ToString(CultureInfo.InvariantCulture)}, from flow time {GenerationService.StartTime(s, plan.Sampler.TimestepShift).ToString("0.###", CultureInfo.InvariantCulture)}, class {Markup.Escape(loaded.Service.Classes.Name(plan.Labels[0]))}) in {result.Elapsed.TotalSeconds:F1} s: wrote [bold]{Markup.Escape(p.GetValue(output) ?? p.GetValue(outDir)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
