using System.Globalization;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation.Probes;
using SvgDiffusion.Models.Evaluator;
using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

public sealed record EvaluatorStepResult(int Step, double Loss, double LearningRate);

/// <summary>
/// Trains the evaluation classifier with cross-entropy, AdamW and a warmup + cosine schedule, on images
/// held in memory (greyscale, at the evaluator's size) with random shifts and flips. Every random draw of
/// step s is derived from (seed, s), so the same command gives the same weights, and a resumed run
/// continues bit-for-bit like one never stopped.
/// </summary>
public sealed class EvaluatorTrainer : IDisposable
{
    public const string KindValue = "svgd_evaluator_training";
    const string KindKey = "svgd.kind", ConfigKey = "svgd.evaluator_config", TrainingKey = "svgd.evaluator_training_config", StepKey = "svgd.step";
    const string OptimizerKey = "optimizer.evaluator";
    const int AugmentStream = 0, OrderStream = 99;

    public EvaluatorNet Model { get; }
    public EvaluatorTrainingConfig Config { get; }
    /// <summary>[N, C, S, S] training images in [-1, 1] (C = the model's input channels: 1 grey, 3 colour) and their labels [N].</summary>
    public Tensor Images { get; }
    public Tensor Labels { get; }
    public int Step { get; private set; }
    public int StepsPerEpoch => (int)(Images.shape[0] / Config.BatchSize);
    public int TotalSteps => StepsPerEpoch * Config.Epochs;

    readonly AdamW _opt;

    public EvaluatorTrainer(EvaluatorNet model, Tensor images, Tensor labels, EvaluatorTrainingConfig config)
    {
        Config = config.Validate();
        if (images.dim() != 4 || images.shape[1] != model.Config.InputChannels || labels.dim() != 1 || labels.shape[0] != images.shape[0])
            throw new SvgdException($"evaluator training needs images [N, {model.Config.InputChannels}, S, S] and labels [N], got {Checkpoint.Shape(images.shape)} and {Checkpoint.Shape(labels.shape)}");
        if (images.shape[0] < config.BatchSize) throw new SvgdException($"evaluator training needs at least one batch of {config.BatchSize} images, got {images.shape[0]}");
        Model = model;
        Images = images;
        Labels = labels;
        _opt = ProbeSchedule.AdamW(model.named_parameters(), config.LearningRate, config.WeightDecay);
    }

    /// <summary>[N, C, S, S] images in [-1, 1] (greyscale for <paramref name="channels"/> 1, RGB for 3) and labels of a whole folder, decoded once.</summary>
    public static (Tensor Images, Tensor Labels) Preload(ImageFolder folder, int size, Action<int>? progress = null, int channels = 1)
    {
        var parts = new List<Tensor>();
        for (int start = 0; start < folder.Count; start += 1000)
        {
            using var scope = torch.NewDisposeScope();
            int n = Math.Min(1000, folder.Count - start);
            var rgb = folder.CenterBatch(Enumerable.Range(start, n), size);
            parts.Add((channels == 3 ? rgb : rgb.mean(new long[] { 1 }, keepdim: true)).MoveToOuterDisposeScope());
            progress?.Invoke(n);
        }
        var images = torch.cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return (images, torch.tensor(folder.Labels.Select(l => (long)l).ToArray()));
    }

    public double LearningRate(int step) =>
        ProbeSchedule.LearningRate((double)step / StepsPerEpoch, Config.Epochs, Config.WarmupEpochs, Config.LearningRate);

    public EvaluatorStepResult TrainStep()
    {
        using var scope = torch.NewDisposeScope();
        Model.train();
        int epoch = Step / StepsPerEpoch, within = Step % StepsPerEpoch;
        using var order = RunCheckpoint.StepGenerator(Config.Seed, epoch, OrderStream);
        var idx = torch.randperm(Images.shape[0], generator: order).narrow(0, (long)within * Config.BatchSize, Config.BatchSize);
        using var aug = RunCheckpoint.StepGenerator(Config.Seed, Step, AugmentStream);
        var x = Augment(Images.index_select(0, idx), aug);
        var y = Labels.index_select(0, idx);
        torch.manual_seed(Config.Seed * 31 + Step);                     // dropout before the head
        double lr = LearningRate(Step);
        ProbeSchedule.SetLearningRate(_opt, lr);
        var loss = nn.functional.cross_entropy(Model.Forward(x), y);
        double value = loss.item<float>();
        if (!double.IsFinite(value)) throw Finite.TrainingStop(Step + 1, $"the evaluator loss ({value})");
        _opt.zero_grad();
        loss.backward();
        _opt.step();
        Step++;
        return new EvaluatorStepResult(Step, value, lr);
    }

    /// <summary>Random translation by up to MaxShift pixels and horizontal flips, one draw per image. The border is black for
    /// grey evaluators (Fashion-MNIST's background) and the edge pixels repeated for colour ones (whatever background the images have).</summary>
    Tensor Augment(Tensor x, Generator g)
    {
        long b = x.shape[0], s = x.shape[2];
        int m = Config.MaxShift;
        var dy = torch.randint(-m, m + 1, new long[] { b }, generator: g).data<long>().ToArray();
        var dx = torch.randint(-m, m + 1, new long[] { b }, generator: g).data<long>().ToArray();
        var flip = (torch.rand(b, generator: g) < 0.5).data<bool>().ToArray();
        if (m == 0 && !Config.Flip) return x;
        var padded = x.shape[1] == 3
            ? nn.functional.pad(x, new long[] { m, m, m, m }, mode: PaddingModes.Replicate)
            : nn.functional.pad(x, new long[] { m, m, m, m }, value: -1.0);
        var items = new Tensor[b];
        for (int i = 0; i < b; i++)
        {
            var crop = padded[i].narrow(1, m + dy[i], s).narrow(2, m + dx[i], s);
            items[i] = Config.Flip && flip[i] ? crop.flip(2) : crop;
        }
        return torch.stack(items);
    }

    /// <summary>Top-1 accuracy and mean cross-entropy of the model in eval mode on RGB or grey images in [-1, 1].</summary>
    public static (double Top1, double Loss) Evaluate(EvaluatorNet model, Tensor images, Tensor labels, int batchSize = 500)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = torch.inference_mode();
            long correct = 0;
            double loss = 0;
            for (long s = 0; s < images.shape[0]; s += batchSize)
            {
                using var scope = torch.NewDisposeScope();
                long n = Math.Min(batchSize, images.shape[0] - s);
                var logits = model.Forward(images.narrow(0, s, n));
                var y = labels.narrow(0, s, n);
                correct += logits.argmax(1).eq(y).sum().item<long>();
                loss += nn.functional.cross_entropy(logits, y, reduction: nn.Reduction.Sum).item<float>();
            }
            return ((double)correct / images.shape[0], loss / images.shape[0]);
        }
        finally { if (wasTraining) model.train(); }
    }

    /// <summary>Weights, optimiser state, step and both configs, written atomically.</summary>
    public void Save(string path)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>(Model.state_dict());
        var meta = new Dictionary<string, string>
        {
            ["format"] = "pt",
            [KindKey] = KindValue,
            [ConfigKey] = ConfigJson.Serialize(Model.Config),
            [TrainingKey] = ConfigJson.Serialize(Config),
            [StepKey] = Step.ToString(CultureInfo.InvariantCulture),
        };
        RunCheckpoint.AddOptimizer(tensors, meta, OptimizerKey, _opt);
        Finite.BeforeSave(tensors, path);
        SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>Continues a run saved by <see cref="Save"/> on the same images.</summary>
    public static EvaluatorTrainer Resume(string path, Tensor images, Tensor labels)
    {
        var header = SafeTensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue(KindKey, out var kind) || kind != KindValue)
            throw new SvgdException($"{path}: not an evaluator training checkpoint (no '{KindKey}: {KindValue}' metadata)");
        var modelConfig = RunCheckpoint.Config<EvaluatorConfig>(header.Metadata, ConfigKey, path).Validate(path);
        var config = RunCheckpoint.Config<EvaluatorTrainingConfig>(header.Metadata, TrainingKey, path);
        using var file = SafeTensors.Open(path);
        var model = new EvaluatorNet(modelConfig);
        var sd = header.Tensors.Where(t => !IsOptimizerState(t.Name)).ToDictionary(t => t.Name, t => file.Read(t.Name));
        try { StateDictLoader.Load(model, sd, path); }
        finally { foreach (var t in sd.Values) t.Dispose(); }
        var trainer = new EvaluatorTrainer(model, images, labels, config);
        RunCheckpoint.RestoreOptimizer(trainer._opt, file, OptimizerKey);
        trainer.Step = RunCheckpoint.Step(header.Metadata, StepKey, path);
        return trainer;
    }

    /// <summary>The optimiser's tensors in a training checkpoint: the byte tensor of older ones, or <c>optimizer.evaluator.*</c>.</summary>
    static bool IsOptimizerState(string name) => name == OptimizerKey || name.StartsWith(OptimizerKey + ".", StringComparison.Ordinal);

    public void Dispose() => _opt.Dispose();
}
