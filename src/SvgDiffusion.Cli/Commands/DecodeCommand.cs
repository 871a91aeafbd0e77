using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class DecodeCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var latents = new Option<string>("--latents") { Description = "Safetensors file holding latents [B, C, h, w].", Required = true };
        var key = new Option<string>("--key") { Description = "Name of the latent tensor.", DefaultValueFactory = _ => "latent" };
        var output = new Option<string>("--out") { Description = "A folder for one PNG per latent, or a .safetensors file for the tensor 'images' in [-1, 1].", Required = true }.Output(v => v.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) ? OptionRules.Kind.OutputFile : OptionRules.Kind.OutputDir);
        var batch = new Option<int>("--batch-size") { Description = "Latents per decoder pass.", DefaultValueFactory = _ => 8 };
        var precision = PrecisionOption.Create(allowFp64: true);
        var cmd = new Command("decode", "Decode SVG latents into images (PNGs, or a tensor in [-1, 1]).") { latents, key, output, batch, precision };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            string latentPath = p.GetValue(latents)!, k = p.GetValue(key)!, outPath = p.GetValue(output)!;
            int bs = p.GetValue(batch);
            var dtype = PrecisionOption.Parse(p, precision);
            using var model = ae.Load(p);
            model.to(dtype);
            var z = SafeTensors.Load(latentPath, new[] { k })[k];
            if (z.dim() != 4 || z.shape[1] != model.Config.LatentChannels)
                throw new SvgdException($"{latentPath}: '{k}' has shape {Checkpoint.Shape(z.shape)}, but this autoencoder decodes [B, {model.Config.LatentChannels}, h, w] latents");
            LatentInput.Check(z, latentPath, k, model.LatentSize, cli.Warn);
            int count = (int)z.shape[0];
            bool toTensor = outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
            var parts = new List<Tensor>();
            ProgressBars.Run(cli.Console, "decode", count, step =>
            {
                for (int s = 0; s < count; s += bs)
                {
                    using var scope = torch.NewDisposeScope();
                    using var _ = torch.inference_mode();
                    int n = Math.Min(bs, count - s);
                    var images = Runtime.Finite.Output(model.Decode(z.narrow(0, s, n).to(dtype)).to(ScalarType.Float32), $"the decoded images {s}..{s + n - 1}");
                    if (toTensor) parts.Add(images.MoveToOuterDisposeScope());
                    else for (int i = 0; i < n; i++) ImageFiles.SavePng(images[i].clamp(-1, 1), Path.Combine(outPath, $"{s + i:D6}.png"));
                    step(n);
                }
            });
            if (toTensor)
            {
                using var all = torch.cat(parts, 0);
                SafeTensors.Save(outPath, new Dictionary<string, Tensor> { ["images"] = all }, new Dictionary<string, string> { ["svgd.command"] = "decode", ["svgd.range"] = "[-1, 1]" });
            }
            cli.Console.MarkupLine($"wrote {count} {(toTensor ? "images to" : "PNGs under")} [bold]{Markup.Escape(outPath)}[/]");
            return 0;
        }));
        return cmd;
    }
}
