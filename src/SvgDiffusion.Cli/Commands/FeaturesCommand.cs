using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class FeaturesCommand
{
    public static Command Create(CliContext cli)
    {
        var model = new ModelOptions($"DINOv3 architecture: {string.Join(", ", Dinov3Presets.Names)} (default: from the file's metadata, a Hugging Face config.json beside it, or its shapes).");
        var encoder = new Option<string>("--encoder") { Description = "DINOv3 checkpoint: the official .pth or a Hugging Face model.safetensors.", Required = true };
        var images = new Option<string?>("--images") { Description = "An image file or a folder of images (searched recursively, sorted by path)." };
        var tensor = new Option<string?>("--tensor") { Description = "A safetensors file holding an ImageNet-normalised NCHW float tensor (instead of --images)." };
        var key = new Option<string?>("--key") { Description = "Name of the tensor inside --tensor." };
        var output = new Option<string>("--out") { Description = "Output safetensors: cls [B,D], registers [B,R,D], patch [B,N,D], layer<K> [B,D,h,w].", Required = true }.OutputFile();
        var layers = new Option<string?>("--layers") { Description = "Comma-separated block indices whose normed patch tokens to add, e.g. 3,11 (negative counts from the last block)." };
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass.", DefaultValueFactory = _ => 8 };
        var size = new Option<string>("--size") { Description = "Resize images to SIZE or HxW pixels (multiples of the patch size; bilinear with antialias).", DefaultValueFactory = _ => "256" };
        var precision = PrecisionOption.Create();
        // The name before --precision existed; still accepted so existing scripts keep working.
        var dtype = new Option<string?>("--dtype") { Description = "Old name of --precision (fp32 or bf16).", Hidden = true };
        var cmd = new Command("features", "Extract frozen DINOv3 features (class, register and patch tokens, intermediate layers) from images or a tensor.")
        { encoder, images, tensor, key, output, layers, batch, size, precision, dtype };
        foreach (var o in model.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            string? imagesPath = p.GetValue(images), tensorPath = p.GetValue(tensor), tensorKey = p.GetValue(key);
            if ((imagesPath == null) == (tensorPath == null)) throw new SvgdException("give exactly one of --images or --tensor");
            if (tensorPath != null && tensorKey == null) throw new SvgdException("--tensor needs --key to name the tensor inside it");
            int batchSize = p.GetValue(batch);
            if (batchSize <= 0) throw new SvgdException("--batch-size must be positive");
            if (p.GetValue(dtype) != null && p.GetResult(precision) is { Implicit: false })
                throw new SvgdException("give --precision only (--dtype is its old name)");
            var compute = p.GetValue(dtype) is string old ? ParseDtype(old) : PrecisionOption.Parse(p, precision);
            var layerIds = ParseLayers(p.GetValue(layers));
            string outPath = p.GetValue(output)!;

            string encoderPath = p.GetValue(encoder)!;
            using var net = Dinov3Checkpoint.Load(encoderPath, model.Dinov3(p), p.GetValue(model.Section), p.GetValue(model.StripPrefix), cli.Warn);
            if (compute != ScalarType.Float32) net.to(compute);
            var cfg = net.Config;
            console.MarkupLine($"DINOv3 [bold]{cfg.EmbedDim}[/]-d, {cfg.Depth} blocks, {cfg.Ffn} FFN, {cfg.NStorageTokens} registers from {Markup.Escape(encoderPath)}");

            IReadOnlyList<string> sources;
            Func<int, int, Tensor> loadBatch;
            int count;
            if (imagesPath != null)
            {
                var files = ImageFiles.List(imagesPath);
                var (h, w) = ParseSize(p.GetValue(size)!);
                var prep = new Preprocessing(h, w).Validate(cfg.PatchSize);
                sources = files.Select(f => Path.GetRelativePath(Directory.Exists(imagesPath) ? imagesPath : Path.GetDirectoryName(Path.GetFullPath(imagesPath))!, f)).ToList();
                loadBatch = (start, n) => prep.LoadBatch(files.Skip(start).Take(n));
                count = files.Count;
            }
            else
            {
                var all = SafeTensors.Load(tensorPath!, new[] { tensorKey! })[tensorKey!];
                if (all.dim() != 4 || all.shape[1] != cfg.InChans || !all.dtype.IsFloatingPoint())
                    throw new SvgdException($"{tensorPath}: '{tensorKey}' must be a float [B,{cfg.InChans},H,W] tensor, got {Checkpoint.Shape(all.shape)} {all.dtype}");
                if (all.shape[2] % cfg.PatchSize != 0 || all.shape[3] % cfg.PatchSize != 0)
                    throw new SvgdException($"{tensorPath}: '{tensorKey}' is {all.shape[2]}x{all.shape[3]}, not a multiple of the patch size {cfg.PatchSize}");
                count = (int)all.shape[0];
                sources = Enumerable.Range(0, count).Select(i => $"{tensorKey}[{i}]").ToList();
                loadBatch = (start, n) => all.narrow(0, start, n).to(ScalarType.Float32);
            }

            var parts = new Dictionary<string, List<Tensor>>();
            void Add(string name, Tensor t) { if (!parts.TryGetValue(name, out var l)) parts[name] = l = new(); l.Add(t.to(ScalarType.Float32).cpu().MoveToOuterDisposeScope()); }
            var sw = Stopwatch.StartNew();
            ProgressBars.Run(console, "features", count, step =>
            {
                for (int start = 0; start < count; start += batchSize)
                {
                    using var scope = torch.NewDisposeScope();
                    using var _ = torch.inference_mode();
                    int n = Math.Min(batchSize, count - start);
                    var x = loadBatch(start, n).to(compute);
                    using var o = net.Forward(x, layerIds, reshapeLayers: true);
                    Add("cls", o.Cls);
                    Add("registers", o.Registers);
                    Add("patch", o.Patch);
                    foreach (var (k, t) in o.Layers) Add($"layer{k}", t);
                    step(n);
                }
            });
            var result = parts.ToDictionary(kv => kv.Key, kv => torch.cat(kv.Value, 0));
            var meta = new Dictionary<string, string>
            {
                ["svgd.command"] = "features",
                ["svgd.encoder"] = encoderPath,
                [Dinov3Checkpoint.ConfigMetadataKey] = ConfigJson.Serialize(cfg),
                ["svgd.sources"] = JsonSerializer.Serialize(sources),
            };
            Runtime.Finite.Weights(result, "the extracted features");
            SafeTensors.Save(outPath, result, meta);
            foreach (var t in result.Values) t.Dispose();
            console.MarkupLine($"wrote [bold]{Markup.Escape(outPath)}[/]: {count} images, {string.Join(", ", result.Keys)} ({count / sw.Elapsed.TotalSeconds:F1} images/s)");
            return 0;
        }));
        return cmd;
    }

    internal static ScalarType ParseDtype(string s) => s.ToLowerInvariant() switch
    {
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        _ => throw new SvgdException($"--dtype must be fp32 or bf16, not '{s}'"),
    };

    internal static int[] ParseLayers(string? s)
    {
        if (string.IsNullOrWhiteSpace(s)) return Array.Empty<int>();
        try { return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(); }
        catch (FormatException) { throw new SvgdException($"--layers must be comma-separated integers, not '{s}'"); }
    }

    internal static (int H, int W) ParseSize(string s)
    {
        var parts = s.ToLowerInvariant().Split('x');
        if (parts.Length is 1 or 2 && parts.All(x => int.TryParse(x, out _)))
        {
            int h = int.Parse(parts[0]), w = int.Parse(parts[^1]);
            if (h > 0 && w > 0) return (h, w);
        }
        throw new SvgdException($"--size must be N or HxW with positive integers, not '{s}'");
    }
}
