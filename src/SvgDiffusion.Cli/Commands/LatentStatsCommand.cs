using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class LatentStatsCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var images = new Option<string>("--images") { Description = "Images to encode (typically the diffusion training set).", Required = true };
        var output = new Option<string>("--out") { Description = "Output safetensors with dinov3_sp_mean and dinov3_sp_std, [1, 1, C], the released file's keys.", Required = true }.OutputFile();
        var flip = new Option<bool>("--flip") { Description = "Also encode horizontal flips (as diffusion training sees them)." };
        var alignment = AutoencoderOptions.AlignmentOption();
        var batch = new Option<int>("--batch-size") { Description = "Images per pass.", DefaultValueFactory = _ => 16 };
        var cmd = new Command("latent-stats", "Per-channel mean and std of SVG latents over a dataset: the normalisation diffusion trains with.") { images, output, flip, alignment, batch };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            using var model = ae.Load(p);
            if (p.GetValue(alignment) is string a) model.Alignment.Mode = AutoencoderOptions.ParseAlignment(a);
            int bs = p.GetValue(batch);
            var (folder, batchOf) = AutoencoderOptions.Images(p.GetValue(images)!, model.Config.ResidualVit.ImageSize);
            var acc = new LatentStatistics.Accumulator();
            ProgressBars.Run(cli.Console, "latent statistics", folder.Count, step =>
            {
                for (int s = 0; s < folder.Count; s += bs)
                {
                    using var scope = torch.NewDisposeScope();
                    using var _ = torch.inference_mode();
                    int n = Math.Min(bs, folder.Count - s);
                    var x = batchOf(s, n);
                    acc.Add(model.Encode(SvgAutoencoder.ToEncoderInput(x)));
                    if (p.GetValue(flip)) acc.Add(model.Encode(SvgAutoencoder.ToEncoderInput(x.flip(3))));
                    step(n);
                }
            });
            using var stats = acc.Result();
            stats.Save(p.GetValue(output)!);
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/]: {stats.Channels} channels, mean of stds {stats.Std.mean().item<float>():F4}");
            return 0;
        }));
        return cmd;
    }
}
