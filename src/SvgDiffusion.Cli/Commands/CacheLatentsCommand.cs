using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;

namespace SvgDiffusion.Cli.Commands;

internal static class CacheLatentsCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var images = new Option<string>("--images") { Description = "Image folder; sub-folder names are the classes (sorted, as torchvision's ImageFolder).", Required = true };
        var output = new Option<string>("--out") { Description = "Cache folder: shard-NNNNN.safetensors (latents + labels) and index.json.", Required = true }.OutputDir();
        var flip = new Option<bool>("--flip") { Description = "Also cache each image's horizontal flip (diffusion training's augmentation)." };
        var alignment = AutoencoderOptions.AlignmentOption();
        var shard = new Option<int>("--shard-size") { Description = "Images per shard (the unit of resumption).", DefaultValueFactory = _ => 512 };
        var batch = new Option<int>("--batch-size") { Description = "Images per encoder pass.", DefaultValueFactory = _ => 16 };
        var bf16 = new Option<bool>("--bf16") { Description = "Store latents as bfloat16 (half the disk; read back as float32)." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a cache made with other settings instead of refusing." };
        var cmd = new Command("cache-latents", "Encode an image folder once into sharded latents (SVG or VAE) + labels, so diffusion training never re-runs the encoders. Resumable; shards spread over the processes under mpiexec.")
        { images, output, flip, alignment, shard, batch, bf16, overwrite };
        foreach (var o in ae.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            using var model = ae.LoadAny(p);
            if (p.GetValue(alignment) is string a)
            {
                if (model is not Models.Autoencoder.SvgAutoencoder svg) throw new SvgdException("--alignment applies to SVG autoencoders only; this one is a VAE");
                svg.Alignment.Mode = AutoencoderOptions.ParseAlignment(a);
            }
            var folder = new ImageFolder(p.GetValue(images)!);
            var writer = new LatentCacheWriter(model, folder, p.GetValue(output)!, new LatentCacheOptions
            {
                Flip = p.GetValue(flip), ImagesPerShard = p.GetValue(shard), BatchSize = p.GetValue(batch),
                BFloat16 = p.GetValue(bf16), AutoencoderPath = p.GetValue(ae.Autoencoder), Overwrite = p.GetValue(overwrite),
            });
            using var cancel = new CtrlC();
            Data.LatentCache? cache = null;
            try
            {
                cli.Console.Progress().AutoClear(false)
                    .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                    .Start(ctx =>
                    {
                        var task = ctx.AddTask("cache-latents", maxValue: Math.Max(1, writer.Total));
                        cache = writer.Write(cli.Comm, (done, total) => { task.MaxValue = Math.Max(1, total); task.Value = done; }, cancel.Token);
                    });
            }
            catch (OperationCanceledException)
            {
                if (cli.IsRoot) cli.Errors.WriteLine($"stopped; {writer.ShardsWritten + writer.ShardsSkipped} complete shards kept, rerun the same command to continue");
                return cancel.Requested ? cancel.ExitCode : 143;
            }
            if (!cli.IsRoot) return 0;
            using var c = cache!;
            cli.Console.MarkupLine($"cache [bold]{Markup.Escape(p.GetValue(output)!)}[/]: {c.Count} latents {Markup.Escape("[" + string.Join(", ", c.LatentShape) + "]")}, {c.NumClasses} classes, {writer.ShardsWritten} shards written, {writer.ShardsSkipped} already done");
            return 0;
        }));
        return cmd;
    }
}
