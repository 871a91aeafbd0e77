using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Sampling;
using SvgDiffusion.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>
/// Turns training runs into a compact, self-describing model folder: the autoencoder without its frozen
/// encoder (where it can be rebuilt, as ResNet-18 from the shipped ONNX), the DiT's EMA weights, and the
/// latent statistics. Each part is stored in fp16 only if its outputs stay within the tolerance of fp32.
/// </summary>
internal static class ExportCommand
{
    public static Command Create(CliContext cli)
    {
        var ae = new Option<string>("--autoencoder") { Description = "Autoencoder (training checkpoint or model file).", Required = true };
        var dit = new Option<string>("--dit") { Description = "DiT training checkpoint (its EMA weights, statistics and class names are exported).", Required = true };
        var output = new Option<string>("--out") { Description = "Model folder to write: autoencoder.safetensors, dit.safetensors, latent-stats.safetensors.", Required = true }.OutputDir();
        var section = new Option<string>("--dit-weights") { Description = "Which DiT weights to export: ema (what sampling normally uses) or model (the raw weights; better when a short run's EMA still remembers early training).", DefaultValueFactory = _ => "ema" };
        var tolerance = new Option<double>("--fp16-tolerance") { Description = "Largest max-abs output difference (decoded image in [-1,1], DiT velocity) that still allows fp16 storage.", DefaultValueFactory = _ => 1e-3 };
        var background = new Option<string?>("--background") { Description = "The colour under transparent pixels in the training images (as import-emoji's --background: white, black, #rrggbb or r,g,b): input images with alpha are composited onto it. Default: none (alpha dropped)." };
        var cmd = new Command("export", "Export trained autoencoder + DiT as a compact model folder (fp16 where outputs stay within tolerance).") { ae, dit, output, section, tolerance, background };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            string outDir = p.GetValue(output)!;
            var bg = p.GetValue(background) is string b ? SvgDiffusion.Data.Emoji.EmojiImportOptions.ParseColour(b) : ((byte R, byte G, byte B)?)null;
            Directory.CreateDirectory(outDir);
            double tol = p.GetValue(tolerance);
            using var _ = torch.inference_mode();
            torch.manual_seed(0);

            using var autoencoder = SvgAutoencoderCheckpoint.Load(p.GetValue(ae)!);
            bool compact = autoencoder.Config.IsResNet;
            var z = torch.randn(8, autoencoder.Config.LatentChannels, autoencoder.Config.ResidualVit.ImageSize / autoencoder.Config.SemanticStride, autoencoder.Config.ResidualVit.ImageSize / autoencoder.Config.SemanticStride);
            string aeTmp = Path.Combine(outDir, "autoencoder.fp16-check.safetensors");
            SvgAutoencoderCheckpoint.Save(autoencoder, aeTmp, includeFrozenEncoder: !compact, dtype: ScalarType.Float16);
            double aeErr;
            using (var half = SvgAutoencoderCheckpoint.Load(aeTmp)) aeErr = MaxAbs(autoencoder.Decode(z), half.Decode(z));
            File.Delete(aeTmp);
            bool aeHalf = aeErr <= tol;
            SvgAutoencoderCheckpoint.Save(autoencoder, Path.Combine(outDir, "autoencoder.safetensors"), includeFrozenEncoder: !compact, dtype: aeHalf ? ScalarType.Float16 : null);

            string ditPath = p.GetValue(dit)!;
            var info = DiTTrainer.ReadInfo(ditPath);
            string weights = p.GetValue(section)!;
            if (weights is not ("ema" or "model")) throw new SvgdException($"--dit-weights must be ema or model, not '{weights}'");
            using var model = DiTCheckpoint.Load(ditPath, section: weights);
            model.eval();
            var meta = new Dictionary<string, string> { ["svgd.trained_steps"] = info.Step.ToString(), ["svgd.weights"] = weights };
            if (info.ClassNames is { Count: > 0 } names) meta[BundledModel.ClassNamesMetadataKey] = JsonSerializer.Serialize(names);
            if (bg is { } c) meta[GenerationService.BackgroundMetadataKey] = $"{c.R},{c.G},{c.B}";
            int tokens = model.Config.InputSize * model.Config.InputSize;
            var x = torch.randn(8, tokens, model.Config.InChannels);
            var t = torch.rand(8);
            var y = torch.arange(8).remainder(model.Config.NumClasses);
            string ditTmp = Path.Combine(outDir, "dit.fp16-check.safetensors");
            DiTCheckpoint.Save(model, ditTmp, ScalarType.Float16, meta);
            double ditErr;
            using (var half = DiTCheckpoint.Load(ditTmp)) { half.eval(); ditErr = MaxAbs(model.Velocity(x, t, y), half.Velocity(x, t, y)); }
            File.Delete(ditTmp);
            bool ditHalf = ditErr <= tol;
            DiTCheckpoint.Save(model, Path.Combine(outDir, "dit.safetensors"), ditHalf ? ScalarType.Float16 : null, meta);

            using var stats = DiTTrainer.ReadStatistics(ditPath);
            stats.Save(Path.Combine(outDir, "latent-stats.safetensors"));
            cli.Console.MarkupLine($"autoencoder: {(aeHalf ? "fp16" : "fp32")} (fp16 decode error {aeErr:g3}){(compact ? ", frozen ResNet-18 rebuilt from the shipped ONNX" : "")}");
            cli.Console.MarkupLine($"DiT: {(ditHalf ? "fp16" : "fp32")} (fp16 velocity error {ditErr:g3}), {weights} weights of step {info.Step}");
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(outDir)}[/]");
            return 0;
        }));
        return cmd;
    }

    static double MaxAbs(Tensor a, Tensor b)
    {
        using var d = (a.to(ScalarType.Float32) - b.to(ScalarType.Float32)).abs().max();
        return d.item<float>();
    }
}
