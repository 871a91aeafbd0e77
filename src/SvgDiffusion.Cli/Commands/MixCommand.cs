using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class MixCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        // Images are positional in every editing command (vary, interpolate, mix, reconstruct); the names stay as aliases.
        var images = new Argument<string[]>("images") { Description = "Two images: the first gives the semantic channels (what the result shows), the second the residual ones (colour, texture).", Arity = new ArgumentArity(0, 2) };
        var semantic = new Option<string?>("--semantic") { Description = "Instead of the first image: the one whose frozen-encoder channels are kept: what the result shows (layout, shape, class)." };
        var detail = new Option<string?>("--detail") { Description = "Instead of the second image: the one whose residual channels are kept: the detail the frozen encoder drops (colour, texture)." };
        var output = new Option<string>("--out") { Description = "PNG of the mix.", Required = true }.OutputFile();
        var strip = new Option<bool>("--strip") { Description = "Write a strip instead: the two reconstructions, then the mix." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("mix", "Semantic editing: decode the SVG latent made of one image's frozen-encoder (semantic) channels and another's residual (detail) channels. Autoencoder only: --autoencoder, default the bundled one.")
        { images, semantic, detail, output, strip, precision };
        foreach (var o in models.Autoencoder.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var files = p.GetValue(images) ?? Array.Empty<string>();
            var named = new[] { p.GetValue(semantic), p.GetValue(detail) }.Where(x => x != null).ToArray();
            if (files.Length > 0 && named.Length > 0) throw new SvgdException("give the two images either as arguments (semantic first) or as --semantic/--detail, not both");
            string? semanticPath = files.Length > 0 ? files[0] : p.GetValue(semantic), detailPath = files.Length > 1 ? files[1] : p.GetValue(detail);
            if (semanticPath == null || detailPath == null) throw new SvgdException($"give two images: mix SEMANTIC.png DETAIL.png (got {files.Length + named.Length})");
            var dtype = PrecisionOption.Parse(p, precision);
            using var aRgba = ImageFiles.LoadRgba(semanticPath);
            using var bRgba = ImageFiles.LoadRgba(detailPath);
            var (ae, background) = models.LoadAutoencoderOnly(p, cli);
            using var _ae = ae;
            using var a = ImageFiles.ToRgb(aRgba, background);
            using var b = ImageFiles.ToRgb(bRgba, background);
            ae.to(dtype);
            var editor = new SemanticEditor(ae, dtype);
            using var scope = torch.NewDisposeScope();
            var mix = editor.Mix(a, b);
            var image = p.GetValue(strip) ? ImageFiles.Grid(torch.cat(new[] { editor.Reconstruct(new[] { a, b }), mix }, 0), 3) : mix[0];
            ImageFiles.SavePng(image, p.GetValue(output)!);
            cli.Console.MarkupLine($"{editor.SemanticChannels} semantic channels of {Markup.Escape(semanticPath)} + {editor.ResidualChannels} residual channels of {Markup.Escape(detailPath)}: wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
