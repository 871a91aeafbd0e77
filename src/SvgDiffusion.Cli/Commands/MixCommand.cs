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
        var semantic = new Option<string>("--semantic") { Description = "Image whose frozen-encoder channels are kept: what the result shows (layout, shape, class).", Required = true };
        var detail = new Option<string>("--detail") { Description = "Image whose residual channels are kept: the detail the frozen encoder drops (colour, texture).", Required = true };
        var output = new Option<string>("--out") { Description = "PNG of the mix.", Required = true }.OutputFile();
        var strip = new Option<bool>("--strip") { Description = "Write a strip instead: the two reconstructions, then the mix." };
        var precision = PrecisionOption.Create();
        var cmd = new Command("mix", "Semantic editing: decode the SVG latent made of one image's frozen-encoder (semantic) channels and another's residual (detail) channels. Autoencoder only: --autoencoder, default the bundled one.")
        { semantic, detail, output, strip, precision };
        foreach (var o in models.Autoencoder.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var dtype = PrecisionOption.Parse(p, precision);
            using var a = ImageFiles.LoadRgb(p.GetValue(semantic)!);
            using var b = ImageFiles.LoadRgb(p.GetValue(detail)!);
            using var ae = models.LoadAutoencoderOnly(p, cli);
            ae.to(dtype);
            var editor = new SemanticEditor(ae, dtype);
            using var scope = torch.NewDisposeScope();
            var mix = editor.Mix(a, b);
            var image = p.GetValue(strip) ? ImageFiles.Grid(torch.cat(new[] { editor.Reconstruct(new[] { a, b }), mix }, 0), 3) : mix[0];
            ImageFiles.SavePng(image, p.GetValue(output)!);
            cli.Console.MarkupLine($"{editor.SemanticChannels} semantic channels of {Markup.Escape(p.GetValue(semantic)!)} + {editor.ResidualChannels} residual channels of {Markup.Escape(p.GetValue(detail)!)}: wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
