using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class ReconstructCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new AutoencoderOptions();
        var imageArg = new Argument<string?>("images") { Description = "An image file or a folder of images.", Arity = ArgumentArity.ZeroOrOne }.InputPath();
        var images = new Option<string?>("--images") { Description = "Instead of the argument: an image file or a folder of images." };
        var output = new Option<string>("--out") { Description = "A .png: the grid (originals beside reconstructions) there and its metrics in <name>.json beside it; otherwise a folder for grid.png and metrics.json.", Required = true }
            .Output(v => v.EndsWith(".png", StringComparison.OrdinalIgnoreCase) ? OptionRules.Kind.OutputFile : OptionRules.Kind.OutputDir);
        ae.Autoencoder.Required = false;
        ae.Autoencoder.Description += " Default: the bundled model's autoencoder.";
        var alignment = AutoencoderOptions.AlignmentOption();
        var batch = new Option<int>("--batch-size") { Description = "Images per pass.", DefaultValueFactory = _ => 8 };
        var max = new Option<int>("--grid-max") { Description = "Most image pairs shown in the grid.", DefaultValueFactory = _ => 32 };
        var metrics = new Option<bool>("--metrics") { Description = "Also LPIPS (needs --lpips/--vgg) and rFID between originals and reconstructions (needs --inception, or --feature-network for FD-<network>)." };
        var lpipsLin = new Option<string?>("--lpips") { Description = "LPIPS linear-layer weights (the LPIPS release's vgg.pth)." };
        var vgg = new Option<string?>("--vgg") { Description = "torchvision VGG-16 weights for LPIPS, unless --lpips holds them." };
        var features = new FeatureNetworkOptions();
        var precision = PrecisionOption.Create();
        var cmd = new Command("reconstruct", "Encode and decode images; write a side-by-side grid and report PSNR and SSIM (and with --metrics LPIPS and rFID) per image and on average.") { imageArg, images, output, alignment, batch, max, metrics, lpipsLin, vgg, precision };
        foreach (var o in ae.All.Concat(features.All)) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            if (p.GetValue(imageArg) != null && p.GetValue(images) != null) throw new SvgdException("give the images either as the argument or as --images, not both");
            string source = p.GetValue(imageArg) ?? p.GetValue(images) ?? throw new SvgdException("give an image or a folder: svgd reconstruct IMAGES --out rec.png");
            string? aePath = ae.ResolvedPath(p);
            if (aePath == null)
            {
                Sampling.BundledModel.EnsurePresent();
                aePath = Sampling.BundledModel.AutoencoderPath;
                cli.Console.MarkupLine($"bundled autoencoder [bold]{Sampling.BundledModel.Name}[/] ({Markup.Escape(Sampling.BundledModel.Directory)})");
            }
            using var model = ae.LoadAny(p, aePath);
            var dtype = PrecisionOption.Parse(p, precision);
            model.Module.to(dtype);
            var svg = model as SvgAutoencoder;
            if (p.GetValue(alignment) is string a)
                (svg ?? throw new SvgdException("--alignment applies to SVG autoencoders only; this one is a VAE")).Alignment.Mode = AutoencoderOptions.ParseAlignment(a);
            int size = model.ImageSize, bs = p.GetValue(batch);
            var (folder, batchOf) = AutoencoderOptions.Images(source, size);
            string outValue = p.GetValue(output)!;
            bool toFile = outValue.EndsWith(".png", StringComparison.OrdinalIgnoreCase);
            string gridPath = toFile ? outValue : Path.Combine(outValue, "grid.png");
            string metricsPath = toFile ? Path.ChangeExtension(outValue, ".json") : Path.Combine(outValue, "metrics.json");
            if (!toFile) Directory.CreateDirectory(outValue);
            bool extra = p.GetValue(metrics);
            using var lpips = extra && p.GetValue(lpipsLin) is string lin ? Models.Losses.Lpips.Load(lin, p.GetValue(vgg)) : null;
            bool wantFd = extra && (p.GetValue(features.Inception) != null || p.GetValue(features.Network) != null);
            using var net = wantFd ? features.Create(p) : null;
            if (extra && lpips == null) cli.Warn("no LPIPS weights (--lpips/--vgg): LPIPS not reported");
            if (extra && net == null) cli.Warn("no feature network (--inception or --feature-network): rFID not reported");
            using var realMoments = net != null ? new FeatureMoments(net.Dim) : null;
            using var recMoments = net != null ? new FeatureMoments(net.Dim) : null;
            var lp = new List<double>();
            var psnr = new List<double>();
            var ssim = new List<double>();
            var pairs = new List<Tensor>();
            int gridMax = p.GetValue(max);
            ProgressBars.Run(cli.Console, "reconstruct", folder.Count, step =>
            {
                for (int s = 0; s < folder.Count; s += bs)
                {
                    using var scope = torch.NewDisposeScope();
                    using var _ = torch.inference_mode();
                    int n = Math.Min(bs, folder.Count - s);
                    var x = batchOf(s, n);
                    var z = svg != null ? svg.Encode(SvgAutoencoder.ToEncoderInput(x).to(dtype)) : model.EncodeImages(x.to(dtype));
                    var rec = model.Decode(z).to(ScalarType.Float32).clamp(-1, 1);
                    var x01 = (x + 1) / 2;
                    var r01 = (rec + 1) / 2;
                    psnr.AddRange(ImageMetrics.Psnr(x01, r01).data<double>().ToArray());
                    ssim.AddRange(ImageMetrics.Ssim(x01, r01).data<double>().ToArray());
                    if (lpips != null) lp.AddRange(lpips.Forward(x, rec).to(ScalarType.Float64).data<double>().ToArray());
                    if (net != null) { realMoments!.Add(net.Features(x01)); recMoments!.Add(net.Features(r01)); }
                    for (int i = 0; i < n && pairs.Count < 2 * gridMax; i++)
                    {
                        pairs.Add(x[i].MoveToOuterDisposeScope());
                        pairs.Add(rec[i].MoveToOuterDisposeScope());
                    }
                    step(n);
                }
            });
            using (var stacked = torch.stack(pairs))
            using (var grid = ImageFiles.Grid(stacked, 2 * Math.Min(4, Math.Max(1, pairs.Count / 2))))
                ImageFiles.SavePng(grid, gridPath);
            var table = new Table().Border(TableBorder.Simple).AddColumn("image").AddColumn(new TableColumn("PSNR (dB)").RightAligned()).AddColumn(new TableColumn("SSIM").RightAligned());
            var rows = folder.Files.Select((f, i) => new { file = Path.GetRelativePath(Directory.Exists(folder.Root) ? folder.Root : Path.GetDirectoryName(Path.GetFullPath(folder.Root))!, f), psnr = psnr[i], ssim = ssim[i] }).ToList();
            foreach (var r in rows.Take(50)) table.AddRow(Markup.Escape(r.file), r.psnr.ToString("F2"), r.ssim.ToString("F4"));
            if (rows.Count > 50) table.AddRow($"... {rows.Count - 50} more", "", "");
            table.AddRow("[bold]mean[/]", $"[bold]{psnr.Average():F2}[/]", $"[bold]{ssim.Average():F4}[/]");
            cli.Console.Write(table);
            double? meanLpips = lp.Count > 0 ? lp.Average() : null;
            double? rfid = null;
            if (net != null)
            {
                using var realStats = realMoments!.ToStatistics(cli.Warn, "originals");
                using var recStats = recMoments!.ToStatistics(cli.Warn, "reconstructions");
                rfid = FrechetDistance.Compute(realStats, recStats, warn: cli.Warn);
            }
            if (meanLpips is double l) cli.Console.MarkupLine($"[bold]LPIPS[/]: {l:F4}");
            if (rfid is double fd) cli.Console.MarkupLine($"[bold]r{net!.Label}[/]: {fd:F4}");
            string json = JsonSerializer.Serialize(new { mean_psnr = psnr.Average(), mean_ssim = ssim.Average(), lpips = meanLpips, rfid, rfid_label = net?.Label, images = rows }, SvgDiffusion.Runtime.Finite.MetricsJson);
            AtomicFile.Write(metricsPath, fs => fs.Write(System.Text.Encoding.UTF8.GetBytes(json)));
            int shown = pairs.Count / 2;
            string which = shown < folder.Count ? $" (the grid shows the first {shown} of {folder.Count} pairs; --grid-max for more)" : "";
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(gridPath)}[/] and {Markup.Escape(metricsPath)}{Markup.Escape(which)}");
            return 0;
        }));
        return cmd;
    }
}
