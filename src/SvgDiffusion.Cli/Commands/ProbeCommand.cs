using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation.Probes;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary><c>svgd probe classify|segment</c>: linear probes on frozen features, the paper's "one feature space, many tasks".</summary>
internal static class ProbeCommand
{
    public static Command Create(CliContext cli)
    {
        var cmd = new Command("probe", "Linear probes of a frozen representation (DINOv3 or an SVG autoencoder's latent).");
        cmd.Subcommands.Add(Classify(cli));
        cmd.Subcommands.Add(Segment(cli));
        cmd.Subcommands.Add(Colour(cli));
        return cmd;
    }

    sealed class EncoderOptions
    {
        public Option<string> Encoder { get; } = new("--encoder") { Description = "A DINOv3 checkpoint (features: class token + mean patch token) or an SVG autoencoder (features: mean SVG latent); detected from its keys.", Required = true };
        public Option<string?> Config { get; } = new("--encoder-config") { Description = "Architecture JSON for --encoder (a DINOv3 config or an SVG autoencoder config)." };
        public Option<int> Size { get; } = new("--size") { Description = "Input size in pixels (shorter side resized, centre crop); an SVG autoencoder needs its own input size.", DefaultValueFactory = _ => 224 };
        public Option<string?> CacheDir { get; } = new("--cache-dir") { Description = "Where extracted features are cached and reused (default: .svgd-cache/probe beside the data)." };
        public Option<int> Batch { get; } = new("--extract-batch-size") { Description = "Images per encoder pass.", DefaultValueFactory = _ => 32 };
        public Option<long> Seed { get; } = new("--seed") { Description = "Seed of the probe's initialisation and batch order.", DefaultValueFactory = _ => 0 };
        public Option<string> Precision { get; } = PrecisionOption.Create();
        public IEnumerable<Option> All => new Option[] { Encoder, Config, Size, CacheDir, Batch, Seed, Precision };

        public (FeatureExtractor Extractor, IDisposable Owner) Load(ParseResult p)
        {
            string path = p.GetValue(Encoder)!;
            var sd = Checkpoint.Open(path);
            var keys = sd.StateDict(sd.Sections().Any(s => s.Name == "state_dict") ? "state_dict" : null).Keys;
            if (keys.Any(k => k.StartsWith("extra_vit.", StringComparison.Ordinal)))
            {
                var cfg = p.GetValue(Config) is string c ? SvgDiffusion.Config.ConfigJson.Load<SvgAutoencoderConfig>(c).Validate(c) : null;
                var ae = SvgAutoencoderCheckpoint.Load(path, cfg);
                ae.to(PrecisionOption.Parse(p, Precision));
                return (new FeatureExtractor(ae, path), ae);
            }
            var dcfg = p.GetValue(Config) is string dc ? SvgDiffusion.Config.ConfigJson.Load<Dinov3Config>(dc, "dino").Validate(dc) : null;
            var dino = Dinov3Checkpoint.Load(path, dcfg);
            dino.to(PrecisionOption.Parse(p, Precision));
            return (new FeatureExtractor(dino, path), dino);
        }

        public ExtractionOptions Extraction(ParseResult p, string dataRoot, Action<int, int> progress) => new()
        {
            BatchSize = p.GetValue(Batch),
            CacheDir = p.GetValue(CacheDir) ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(dataRoot)) ?? ".", ".svgd-cache", "probe"),
            Progress = progress,
        };
    }

    static ProbeFeatures Extract(CliContext cli, string what, int count, Func<Action<int, int>, ProbeFeatures> run)
    {
        ProbeFeatures? result = null;
        ProgressBars.Run(cli.Console, what, count, step =>
        {
            long last = 0;
            result = run((done, _) => { step(done - last); last = done; });
        });
        if (result!.FromCache) cli.Console.MarkupLine($"{Markup.Escape(what)}: reused [grey]{Markup.Escape(result.CachePath ?? "")}[/]");
        return result;
    }

    static Command Classify(CliContext cli)
    {
        var enc = new EncoderOptions();
        var train = new Option<string>("--train") { Description = "Training images in one sub-folder per class.", Required = true };
        var val = new Option<string>("--val") { Description = "Validation images, same class sub-folders.", Required = true };
        var epochs = new Option<int>("--epochs") { Description = "Training epochs.", DefaultValueFactory = _ => 90 };
        var batch = new Option<int>("--batch-size") { Description = "Probe mini-batch.", DefaultValueFactory = _ => 256 };
        var lr = new Option<double>("--lr") { Description = "AdamW peak learning rate (cosine schedule).", DefaultValueFactory = _ => 1e-3 };
        var wd = new Option<double>("--weight-decay") { Description = "AdamW weight decay.", DefaultValueFactory = _ => 0.0 };
        var warmup = new Option<int>("--warmup-epochs") { Description = "Linear warm-up epochs before the cosine decay.", DefaultValueFactory = _ => 0 };
        var cmd = new Command("classify", "Linear classification probe: frozen features -> linear classifier (AdamW, cosine), top-1 and top-5.") { train, val, epochs, batch, lr, wd, warmup };
        foreach (var o in enc.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var (extractor, owner) = enc.Load(p);
            using var _o = owner;
            var trainSet = new ImageFolder(p.GetValue(train)!);
            var valSet = new ImageFolder(p.GetValue(val)!);
            if (!trainSet.ClassNames.SequenceEqual(valSet.ClassNames))
                throw new SvgdException($"{p.GetValue(val)}: classes ({string.Join(", ", valSet.ClassNames.Take(5))}...) differ from {p.GetValue(train)} ({string.Join(", ", trainSet.ClassNames.Take(5))}...)");
            if (trainSet.ClassNames.Count < 2) throw new SvgdException($"{p.GetValue(train)}: needs at least two class sub-folders");
            int size = p.GetValue(enc.Size);
            using var ft = Extract(cli, "train features", trainSet.Count, pr => extractor.ExtractVectors(trainSet, size, enc.Extraction(p, p.GetValue(train)!, pr)));
            using var fv = Extract(cli, "val features", valSet.Count, pr => extractor.ExtractVectors(valSet, size, enc.Extraction(p, p.GetValue(val)!, pr)));
            var cfg = new LinearProbeConfig
            {
                Epochs = p.GetValue(epochs), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr), WeightDecay = p.GetValue(wd),
                WarmupEpochs = p.GetValue(warmup), Seed = p.GetValue(enc.Seed),
            }.Validate();
            LinearProbeResult? result = null;
            ProgressBars.Run(cli.Console, "linear probe", cfg.Epochs, step =>
                result = LinearProbe.TrainAndEvaluate(ft.Features, ft.Labels!, fv.Features, fv.Labels!, trainSet.ClassNames.Count, cfg, _ => step(1)));
            var r = result!;
            cli.Console.MarkupLine($"{extractor.Kind} features ({ft.Features.shape[1]}-d), {trainSet.Count} train / {valSet.Count} val images, {trainSet.ClassNames.Count} classes");
            cli.Console.MarkupLine($"[bold]top-1 {r.Validation.Top1:P2}[/], top-{r.Validation.TopK} {r.Validation.Top5:P2} (train top-1 {r.Train.Top1:P2})");
            return 0;
        }));
        return cmd;
    }

    static Command Colour(CliContext cli)
    {
        var ae = new Option<string>("--autoencoder") { Description = "SVG autoencoder whose latent is probed (a file, a model folder or a bundled model's name).", Required = true };
        var train = new Option<string>("--train") { Description = "Images the probe is fitted on (a folder, recursive), on a plain background.", Required = true };
        var test = new Option<string>("--test") { Description = "Held-out images the R² is measured on (e.g. another artist's).", Required = true };
        var background = new Option<string>("--background") { Description = "The images' background colour (white, black, #rrggbb or r,g,b): pixels that differ from it by more than 0.1 are the foreground.", DefaultValueFactory = _ => "white" };
        var lambda = new Option<double>("--lambda") { Description = "Ridge penalty per training image on standardised features.", DefaultValueFactory = _ => 1e-3 };
        var output = new Option<string?>("--json") { Description = "Also write the result as JSON." }.OutputFile();
        var precision = PrecisionOption.Create();
        var cmd = new Command("colour", "Where the latent keeps colour: ridge probes of the mean foreground hue (saturation-weighted, HSV) from the grid-averaged semantic channels, the residual channels and both; R² on held-out images.")
        { ae, train, test, background, lambda, output, precision };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var bg = SvgDiffusion.Data.Emoji.EmojiImportOptions.ParseColour(p.GetValue(background)!);
            var trainSet = new ImageFolder(p.GetValue(train)!);
            var testSet = new ImageFolder(p.GetValue(test)!);
            string path = p.GetValue(ae)!;
            if (SvgDiffusion.Sampling.ModelFolder.Resolve(path, "--autoencoder") is { } folder) path = folder.AutoencoderPath;
            using var model = SvgAutoencoderCheckpoint.Load(path);
            model.to(PrecisionOption.Parse(p, precision));
            ColourProbeResult? r = null;
            ProgressBars.Run(cli.Console, "encode", trainSet.Count + testSet.Count, step =>
                r = ColourProbe.Run(model, trainSet, testSet, (bg.R / 255.0, bg.G / 255.0, bg.B / 255.0), p.GetValue(lambda), n => step(n)));
            cli.Console.MarkupLine($"mean foreground hue, R² on {r!.Test} held-out images (fitted on {r.Train}):");
            cli.Console.MarkupLine($"  semantic channels ({r.SemanticDim}): [bold]{r.SemanticR2:F3}[/]");
            cli.Console.MarkupLine($"  residual channels ({r.ResidualDim}): [bold]{r.ResidualR2:F3}[/]");
            cli.Console.MarkupLine($"  both ({r.SemanticDim + r.ResidualDim}): [bold]{r.BothR2:F3}[/]");
            if (p.GetValue(output) is string o)
                Checkpoints.AtomicFile.Write(o, fs => System.Text.Json.JsonSerializer.Serialize(fs, r, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }));
        return cmd;
    }

    static Command Segment(CliContext cli)
    {
        var enc = new EncoderOptions();
        var train = new Option<string>("--train") { Description = "Folder with images/ and labels/ (label PNGs of class indices, 255 = ignore), matched by file stem.", Required = true };
        var val = new Option<string>("--val") { Description = "Validation folder, same layout.", Required = true };
        var classes = new Option<int?>("--classes") { Description = "Number of classes (default: the largest label index seen + 1)." };
        var epochs = new Option<int>("--epochs") { Description = "Training epochs.", DefaultValueFactory = _ => 20 };
        var batch = new Option<int>("--batch-size") { Description = "Images per step.", DefaultValueFactory = _ => 16 };
        var lr = new Option<double>("--lr") { Description = "AdamW peak learning rate (cosine schedule).", DefaultValueFactory = _ => 1e-3 };
        var cmd = new Command("segment", "Segmentation probe: frozen patch features -> BatchNorm + 1x1 linear head -> bilinear upsampling; mIoU and pixel accuracy.") { train, val, classes, epochs, batch, lr };
        foreach (var o in enc.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var (extractor, owner) = enc.Load(p);
            using var _o = owner;
            var trainSet = new SegmentationFolder(p.GetValue(train)!);
            var valSet = new SegmentationFolder(p.GetValue(val)!);
            int size = p.GetValue(enc.Size);
            int numClasses = p.GetValue(classes) ?? Math.Max(trainSet.InferNumClasses(), valSet.InferNumClasses());
            using var ft = Extract(cli, "train features", trainSet.Count, pr => extractor.ExtractGrids(trainSet, size, enc.Extraction(p, p.GetValue(train)!, pr)));
            using var fv = Extract(cli, "val features", valSet.Count, pr => extractor.ExtractGrids(valSet, size, enc.Extraction(p, p.GetValue(val)!, pr)));
            using var yt = trainSet.Labels(size);
            using var yv = valSet.Labels(size);
            var cfg = new SegmentationProbeConfig { Epochs = p.GetValue(epochs), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr), Seed = p.GetValue(enc.Seed) }.Validate();
            SegmentationProbeResult? result = null;
            ProgressBars.Run(cli.Console, "segmentation probe", cfg.Epochs, step =>
                result = SegmentationProbe.TrainAndEvaluate(ft.Features, yt, fv.Features, yv, numClasses, cfg, _ => step(1)));
            var m = result!.Validation;
            cli.Console.MarkupLine($"{extractor.Kind} patch features, {trainSet.Count} train / {valSet.Count} val images, {numClasses} classes");
            cli.Console.MarkupLine($"[bold]mIoU {m.MeanIoU:P2}[/], pixel accuracy {m.PixelAccuracy:P2} ({m.ClassesCounted} classes counted)");
            return 0;
        }));
        return cmd;
    }
}
