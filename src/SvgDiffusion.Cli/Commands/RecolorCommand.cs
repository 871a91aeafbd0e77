using System.CommandLine;
using System.Globalization;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary><c>svgd recolor</c>: SVG's own edit, keeping an image's semantic channels and regenerating its residual (colour) channels.</summary>
internal static class RecolorCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        var image = new Argument<string>("image") { Description = "The image to recolour: its semantic (frozen-encoder) channels are kept, so its shape and pose stay." }.InputPath();
        var like = new Option<string?>("--like") { Description = "Take the colours from this image: its residual channels are the start, fitted by the DiT to IMAGE's shape (the two need not be aligned)." }.InputPath();
        var cls = new Option<string?>("--class") { Description = "Class to steer the new colours towards, an index or a name (default: unconditional). Without --like, the colours are drawn afresh from IMAGE's own, noised by --strength." };
        var strength = new Option<double>("--strength") { Description = "How much of the sampling schedule regenerates the residual channels, in [0.001, 1] (as vary's): low keeps the start colours (IMAGE2's with --like), 1 draws new ones from noise.", DefaultValueFactory = _ => GenerationRequest.DefaultRecolorStrength };
        var n = new Option<int>("--n") { Description = "Number of recolourings (sample i's noise depends on (seed, i)); with more than one, --out is a grid.", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "PNG of the edited image alone, at the model's resolution (a grid when --n > 1).", Required = true }.OutputFile();
        var strip = new Option<bool>("--strip") { Description = "Write a strip instead: source | reference (with --like) | edit(s), at the model's resolution." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("recolor", "Recolour an image with SVG's split latent: keep its semantic (frozen-encoder) channels and regenerate only the residual (colour, texture) channels with the DiT, from another image's colours (--like) or a class (--class).")
        { image, like, cls, strength, n, output, strip, precision };
        foreach (var o in models.Options()) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            string source = p.GetValue(image)!;
            string? reference = p.GetValue(like);
            if (reference == null && p.GetValue(cls) == null) throw new SvgdException("give --like IMAGE2 (take its colours) or --class K (new colours of a class)");
            var request = models.DiT.Request(p, classes: p.GetValue(cls), n: p.GetValue(n), precision: p.GetValue(precision));
            request.Validate(models.DiT.Limits(p), "--");
            double s = p.GetValue(strength);
            GenerationRequest.ValidateStrength(s, "--");
            var dtype = PrecisionOption.Parse(p, precision);
            using var sourceRgba = ImageFiles.LoadRgba(source);
            using var likeRgba = reference != null ? ImageFiles.LoadRgba(reference) : null;
            using var loaded = models.Load(p, cli, dtype);
            var service = loaded.Service;
            var plan = service.Plan(request, models.DiT.Limits(p), "--", unconditionalByDefault: true, classesField: "class");
            using var sourceRgb = ImageFiles.ToRgb(sourceRgba, service.Background);
            using var likeRgb = likeRgba is not null ? ImageFiles.ToRgb(likeRgba, service.Background) : null;
            using var result = ProgressBars.Track(cli.Console, "recolouring", GenerationService.Work(plan.Count, plan.Sampler.Steps, true),
                report => service.Recolor(sourceRgb, likeRgb, s, plan, report));
            using (var scope = torch.NewDisposeScope())
            {
                Tensor picture;
                if (p.GetValue(strip))
                {
                    var inputs = service.Editor!.Prepare(likeRgb is not null ? new[] { sourceRgb, likeRgb } : new[] { sourceRgb });
                    picture = ImageFiles.Grid(torch.cat(new[] { inputs, result.Images! }, 0), (int)inputs.shape[0] + plan.Count);
                }
                else picture = plan.Count == 1 ? result.Images![0] : result.Grid();
                ImageFiles.SavePng(picture, p.GetValue(output)!);
            }
            string from = reference != null ? $"colours of {Markup.Escape(reference)}" : $"class {Markup.Escape(service.Classes.Name(plan.Labels[0]))}";
            cli.Console.MarkupLine($"{Markup.Escape(source)} recoloured ({from}; strength {s.ToString(CultureInfo.InvariantCulture)}, from flow time {GenerationService.StartTime(s, plan.Sampler.TimestepShift).ToString("0.###", CultureInfo.InvariantCulture)}) in {result.Elapsed.TotalSeconds:F1} s: wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
