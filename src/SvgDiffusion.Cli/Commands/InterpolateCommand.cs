using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class InterpolateCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        var images = new Argument<string[]>("images") { Description = "Two images: their latents are interpolated on a straight line and decoded (autoencoder only).", Arity = new ArgumentArity(0, 2) };
        var seeds = new Option<string?>("--seeds") { Description = "Instead of images, two seeds A,B: the noises of their first samples are interpolated on the sphere and each frame is sampled with the DiT (--class, --steps, --cfg, ...)." };
        var cls = new Option<string?>("--class") { Description = "With --seeds: the class of every frame, an index or a name (default: unconditional)." };
        var frames = new Option<int>("--frames") { Description = "Frames on the path, both ends included.", DefaultValueFactory = _ => 8 };
        var output = new Option<string?>("--out") { Description = "PNG strip of the frames, left to right." }.OutputFile();
        var outDir = new Option<string?>("--out-dir") { Description = "Folder for one PNG per frame." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("interpolate", "A path between two images (straight, on their latents) or between two samples (spherical, on their noise), as a PNG strip or frames.")
        { images, seeds, cls, frames, output, outDir, precision };
        foreach (var o in models.Options()) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var files = p.GetValue(images) ?? Array.Empty<string>();
            string? seedList = p.GetValue(seeds);
            int count = p.GetValue(frames);
            if (seedList != null && files.Length > 0) throw new SvgdException("give either two images or --seeds, not both");
            if (seedList == null && files.Length != 2) throw new SvgdException($"give two images (or --seeds A,B), got {files.Length}");
            if (count < 2) throw new SvgdException($"--frames must be at least 2 (both ends of the path), got {count}");
            Runtime.ResourceBudget.RequireAtMost("--frames", count, DiTOptions.MaxFrames, p.GetValue(models.DiT.AllowLarge));
            if (p.GetValue(output) == null && p.GetValue(outDir) == null) throw new SvgdException("give --out (a strip) and/or --out-dir (one PNG per frame)");
            var dtype = PrecisionOption.Parse(p, precision);
            Tensor strip;
            string how;
            if (seedList == null)
            {
                if (p.GetValue(cls) != null) throw new SvgdException("--class applies to --seeds; images are interpolated by the autoencoder alone");
                using var aRgba = ImageFiles.LoadRgba(files[0]);
                using var bRgba = ImageFiles.LoadRgba(files[1]);
                var (ae, background) = models.LoadAutoencoderOnly(p, cli);
                using var _ae = ae;
                using var a = ImageFiles.ToRgb(aRgba, background);
                using var b = ImageFiles.ToRgb(bRgba, background);
                ae.to(dtype);
                strip = new SemanticEditor(ae, dtype).Interpolate(a, b, count, "--frames");
                how = $"{count} frames on the line between the latents of {Markup.Escape(files[0])} and {Markup.Escape(files[1])}";
            }
            else
            {
                var parts = ClassLabels.Split(seedList, "--seeds").ToArray();
                long sa = 0, sb = 0;
                if (parts.Length != 2 || !long.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out sa) || !long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out sb))
                    throw new SvgdException($"--seeds must be two whole numbers A,B, not '{seedList}'");
                if (p.GetResult(models.DiT.Seed) is { Implicit: false }) throw new SvgdException("--seed does not apply with --seeds");
                var request = models.DiT.Request(p, classes: p.GetValue(cls), n: 1, precision: p.GetValue(precision));
                request.Validate(models.DiT.Limits(p), "--");
                using var loaded = models.Load(p, cli, dtype);
                var plan = loaded.Service.Plan(request, models.DiT.Limits(p), "--", unconditionalByDefault: true, classesField: "class");
                if (plan.Rows > 1) throw new SvgdException($"--class: an interpolation between two seeds samples one class, got {plan.Rows}");
                using var result = ProgressBars.Track(cli.Console, "sampling", GenerationService.Work(count, plan.Sampler.Steps, true),
                    report => loaded.Service.InterpolateSeeds(sa, sb, count, plan, report));
                strip = result.Images!.alias();
                how = $"{count} frames of class {Markup.Escape(loaded.Service.Classes.Name(plan.Labels[0]))} on the sphere between the noises of seeds {sa} and {sb}";
            }
            using (strip)
            {
                if (p.GetValue(outDir) is string dir)
                    for (int i = 0; i < count; i++) ImageFiles.SavePng(strip[i], Path.Combine(dir, $"frame-{i:D3}.png"));
                if (p.GetValue(output) is string o)
                {
                    using var grid = ImageFiles.Grid(strip, count);
                    ImageFiles.SavePng(grid, o);
                }
            }
            cli.Console.MarkupLine($"{how}: wrote [bold]{Markup.Escape(p.GetValue(output) ?? p.GetValue(outDir)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
