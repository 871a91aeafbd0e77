using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class EncodeCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var images = new Option<string?>("--images") { Description = "An image file or a folder of images (recursive, sorted); resized so the shorter side is the model's input size, then centre-cropped." };
        var tensor = new Option<string?>("--tensor") { Description = "A safetensors file with an ImageNet-normalised NCHW float tensor, instead of --images." };
        var key = new Option<string?>("--key") { Description = "Name of the tensor inside --tensor." };
        var output = new Option<string>("--out") { Description = "Output safetensors holding 'latent' [B, C, h, w].", Required = true }.OutputFile();
        var alignment = AutoencoderOptions.AlignmentOption();
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass (in 'batch' alignment this also decides the statistics).", DefaultValueFactory = _ => 8 };
        var precision = PrecisionOption.Create(allowFp64: true);
        var cmd = new Command("encode", "Encode images into SVG latents: DINOv3 patch features plus aligned residual channels.") { images, tensor, key, output, alignment, batch, precision };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            string? imagesPath = p.GetValue(images), tensorPath = p.GetValue(tensor), tensorKey = p.GetValue(key);
            if ((imagesPath == null) == (tensorPath == null)) throw new SvgdException("give exactly one of --images or --tensor");
            if (tensorPath != null && tensorKey == null) throw new SvgdException("--tensor needs --key to name the tensor inside it");
            int bs = p.GetValue(batch);
            if (bs <= 0) throw new SvgdException("--batch-size must be positive");
            var dtype = PrecisionOption.Parse(p, precision);
            using var model = ae.Load(p);
            model.to(dtype);
            if (p.GetValue(alignment) is string a) model.Alignment.Mode = AutoencoderOptions.ParseAlignment(a);
            int size = model.Config.ResidualVit.ImageSize;

            int count;
            Func<int, int, Tensor> load;
            IReadOnlyList<string> sources;
            if (imagesPath != null)
            {
                var (folder, batchOf) = AutoencoderOptions.Images(imagesPath, size);
                count = folder.Count;
                sources = folder.Files;
                load = (s, n) => { using var x = batchOf(s, n); return SvgAutoencoder.ToEncoderInput(x); };
            }
            else
            {
                var all = SafeTensors.Load(tensorPath!, new[] { tensorKey! })[tensorKey!];
                if (all.dim() != 4 || all.shape[1] != 3 || all.shape[2] != size || all.shape[3] != size)
                    throw new SvgdException($"{tensorPath}: '{tensorKey}' must be [B, 3, {size}, {size}] (ImageNet-normalised), got {Checkpoint.Shape(all.shape)}");
                count = (int)all.shape[0];
                sources = Enumerable.Range(0, count).Select(i => $"{tensorKey}[{i}]").ToList();
                load = (s, n) => all.narrow(0, s, n).to(ScalarType.Float32);
            }
            var parts = new List<Tensor>();
            ProgressBars.Run(cli.Console, "encode", count, step =>
            {
                for (int s = 0; s < count; s += bs)
                {
                    using var scope = torch.NewDisposeScope();
                    using var _ = torch.inference_mode();
                    int n = Math.Min(bs, count - s);
                    parts.Add(model.Encode(load(s, n).to(dtype)).to(ScalarType.Float32).MoveToOuterDisposeScope());
                    step(n);
                }
            });
            using var latent = torch.cat(parts, 0);
            Runtime.Finite.Output(latent, "the encoded latents");
            SafeTensors.Save(p.GetValue(output)!, new Dictionary<string, Tensor> { ["latent"] = latent }, new Dictionary<string, string>
            {
                ["svgd.command"] = "encode",
                ["svgd.autoencoder"] = p.GetValue(ae.Autoencoder)!,
                ["svgd.alignment"] = model.Alignment.Mode.ToString().ToLowerInvariant(),
                ["svgd.sources"] = JsonSerializer.Serialize(sources),
            });
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/]: latent {Markup.Escape(Checkpoint.Shape(latent.shape))} ({model.Alignment.Mode.ToString().ToLowerInvariant()} alignment)");
            return 0;
        }));
        return cmd;
    }
}
