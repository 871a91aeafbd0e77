using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class CalibrateCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var images = new Option<string>("--images") { Description = "Images whose features set the stored alignment statistics (a few hundred representative images suffice).", Required = true };
        var output = new Option<string>("--out") { Description = "Output autoencoder (.safetensors) with the statistics stored and 'stored' alignment as its default.", Required = true }.OutputFile();
        var batch = new Option<int>("--batch-size") { Description = "Images per batch; the statistics are averaged over batches.", DefaultValueFactory = _ => 16 };
        var cmd = new Command("calibrate", "Compute batch-independent alignment statistics for an autoencoder (e.g. the released one, which stores none).") { images, output, batch };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var loaded = ae.Load(p);
            var cfg = loaded.Config with { Alignment = loaded.Config.Alignment with { Mode = AlignmentMode.Stored } };
            // Rebuild with 'stored' as the saved default, keeping every weight.
            using var model = new SvgAutoencoder(cfg, loaded.SemanticEncoder);
            Checkpoints.StateDictLoader.Load(model, loaded.state_dict(), p.GetValue(ae.Autoencoder)!);
            model.eval();
            int bs = p.GetValue(batch);
            var (folder, batchOf) = AutoencoderOptions.Images(p.GetValue(images)!, cfg.ResidualVit.ImageSize);
            IEnumerable<TorchSharp.torch.Tensor> Batches(Action<long> step)
            {
                for (int s = 0; s < folder.Count; s += bs)
                {
                    int n = Math.Min(bs, folder.Count - s);
                    using var x = batchOf(s, n);
                    yield return SvgAutoencoder.ToEncoderInput(x);
                    step(n);
                }
            }
            ProgressBars.Run(cli.Console, "calibrate", folder.Count, step => model.CalibrateAlignment(Batches(step)));
            SvgAutoencoderCheckpoint.Save(model, p.GetValue(output)!);
            var s = model.Alignment.Stored;
            cli.Console.MarkupLine($"semantic mean {s.SemanticMean:F4} std {s.SemanticStd:F4}; residual mean {s.ResidualMean:F4} std {s.ResidualStd:F4}");
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(p.GetValue(output)!)}[/] (alignment 'stored' by default)");
            return 0;
        }));
        return cmd;
    }
}
