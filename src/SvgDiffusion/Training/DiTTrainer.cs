using System.Globalization;
using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Common;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Runtime;
using SvgDiffusion.Transport;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

/// <summary>One optimisation step: the step count after it, the flow loss, and the gradient norm before clipping.</summary>
public sealed record DiTStepResult(int Step, double Loss, double GradNorm);

/// <summary>What a diffusion training checkpoint says about itself, read from its header alone.</summary>
public sealed record DiTTrainingInfo(int Step, DiTConfig Model, DiTTrainingConfig Training, IReadOnlyList<string>? ClassNames, IReadOnlyList<long>? LatentShape);

/// <summary>
/// Trains an SVG diffusion transformer on normalised latents as the reference does: rectified flow with
/// uniform times shifted by 0.4, label dropout (the DiT's class_dropout_prob) for classifier-free
/// guidance, AdamW, and an EMA copy of the weights updated after every step (the weights to sample with).
/// <para>Every random draw of step s (batch order, times, noise, dropped labels) is derived from
/// (seed, s), so a run resumed from a checkpoint continues bit-for-bit like one never stopped.</para>
/// <para>Data parallel (<see cref="Distribute"/>): each process computes a contiguous shard of the global
/// batch. Times, noise and dropped labels are drawn per sample from (seed, step, global sample index)
/// (<see cref="SampleRandom"/>), the loss is the shard's share of the global-batch mean, and gradients are
/// summed over the processes, so N processes take the step one process takes with the same batch.</para>
/// </summary>
public sealed class DiTTrainer : IDisposable
{
    public const string KindValue = "svg_dit_training";
    const string KindKey = "svgd.kind", TrainingConfigKey = "svgd.dit_training_config", StepKey = "svgd.step";
    const string ClassNamesKey = "svgd.class_names", LatentShapeKey = "svgd.latent_shape", WorldSizeKey = "svgd.world_size";
    const string ModelPrefix = "model.", EmaPrefix = "ema.", OptimizerKey = "optimizer.dit";
    public const string StatsMeanKey = "stats.mean", StatsStdKey = "stats.std";

    // Streams of RunCheckpoint.StepGenerator.
    const int FlowStream = 0, DropoutStream = 1, OrderStream = 99;

    public DiT Model { get; }
    /// <summary>The exponential moving average of <see cref="Model"/>'s weights; always in eval mode.</summary>
    public DiT Ema { get; }
    public DiTTrainingConfig Config { get; }
    /// <summary>The normalisation of the latents the model is trained on (a copy owned by the trainer).</summary>
    public LatentStatistics Statistics { get; }
    public LatentCache? Cache { get; }
    /// <summary>Size of the dataset batches are drawn from.</summary>
    public int DatasetSize { get; }
    public IReadOnlyList<string>? ClassNames { get; }
    public int Step { get; private set; }
    /// <summary>The AdamW optimiser of <see cref="Model"/>'s trainable parameters; its state is part of every checkpoint.</summary>
    public OptimizerHelper Optimizer => _opt;
    /// <summary>The processes training together (1 until <see cref="Distribute"/>).</summary>
    public ICommunicator Comm => _comm;
    /// <summary>How many processes trained the run this trainer resumed (1 for checkpoints that do not say); null for a new run.</summary>
    public int? ResumedWorldSize { get; private set; }
    /// <summary>The gradient allreduce of a data-parallel run (null in one process): its bytes per step and time so far.</summary>
    public GradientBuckets? Allreduce => _buckets;

    /// <summary>Called with the name of each phase of <see cref="TrainStep"/> as it ends (forward, backward, clip, optimizer, ema): for memory profiling.</summary>
    public Action<string>? PhaseProbe { get; set; }

    ICommunicator _comm = SingleProcess.Instance;
    GradientBuckets? _buckets;
    readonly Func<IReadOnlyList<int>, (Tensor Latents, Tensor Labels)> _batches;
    readonly RectifiedFlow _flow;
    readonly OptimizerHelper _opt;
    readonly List<Parameter> _trainable;
    readonly List<(Parameter Ema, Parameter Model)> _emaPairs;
    readonly Lean.Scratch _clipScratch = new();
    bool _ownsModel;
    DiT? _compute;
    MixedPrecision? _mixed;

    /// <summary>
    /// The precision forward and backward run in: fp32, or bf16 with fp32 master weights and optimiser
    /// state (<see cref="MixedPrecision"/>). Not part of the run's configuration: a run may resume in
    /// either, and checkpoints hold the fp32 weights whichever it is.
    /// </summary>
    public ScalarType ComputePrecision
    {
        get => _compute?.ComputePrecision ?? ScalarType.Float32;
        set
        {
            if (value == ComputePrecision) return;
            _compute?.Dispose();
            _compute = null;
            _mixed = null;
            if (value == ScalarType.Float32) return;
            if (value != ScalarType.BFloat16) throw new SvgdException($"DiT training runs in fp32 or bf16, not {Runtime.Precision.Name(value)}");
            _compute = new DiT(Model.Config);
            _compute.SetComputePrecision(ScalarType.BFloat16);
            _mixed = new MixedPrecision(Model, _compute);
            // The copy was built in fp32 (twice its bf16 size), then rounded: give those pages back.
            MallocTuning.Trim();
        }
    }

    /// <summary>Trains on a latent cache; <paramref name="statistics"/> default to the cache's own (computed here).</summary>
    public DiTTrainer(DiT model, LatentCache cache, DiTTrainingConfig config, LatentStatistics? statistics = null)
        : this(model, cache.Batch, cache.Count, config, statistics ?? cache.ComputeStatistics(), ownsStatistics: statistics == null, cache)
    {
        if (cache.Channels != model.Config.InChannels)
            throw new SvgdException($"{cache.Directory}: latents have {cache.Channels} channels, the DiT takes in_channels {model.Config.InChannels}");
        if (cache.LatentShape[1] != model.Config.InputSize || cache.LatentShape[2] != model.Config.InputSize)
            throw new SvgdException($"{cache.Directory}: latents are {cache.LatentShape[1]}x{cache.LatentShape[2]}, the DiT's input_size is {model.Config.InputSize}");
        if (cache.NumClasses > model.Config.NumClasses)
            throw new SvgdException($"{cache.Directory}: {cache.NumClasses} classes, more than the DiT's num_classes {model.Config.NumClasses}");
    }

    /// <summary>Trains on latents produced on demand (e.g. encoded online): <paramref name="batches"/> maps dataset indices
    /// to raw latents [B, C, h, w] and labels [B]; it must be deterministic for resumed runs to match.</summary>
    public DiTTrainer(DiT model, Func<IReadOnlyList<int>, (Tensor Latents, Tensor Labels)> batches, int datasetSize, DiTTrainingConfig config, LatentStatistics statistics, IReadOnlyList<string>? classNames = null)
        : this(model, batches, datasetSize, config, statistics, ownsStatistics: false, null, classNames)
    {
    }

    DiTTrainer(DiT model, Func<IReadOnlyList<int>, (Tensor, Tensor)> batches, int datasetSize, DiTTrainingConfig config,
        LatentStatistics statistics, bool ownsStatistics, LatentCache? cache, IReadOnlyList<string>? classNames = null)
    {
        Config = config.Validate();
        if (datasetSize <= 0) throw new SvgdException("training needs at least one latent");
        if (statistics.Channels != model.Config.InChannels)
            throw new SvgdException($"latent statistics have {statistics.Channels} channels, the DiT takes in_channels {model.Config.InChannels}");
        Model = model;
        Cache = cache;
        _batches = batches;
        DatasetSize = datasetSize;
        ClassNames = classNames ?? cache?.ClassNames;
        Statistics = ownsStatistics ? statistics : new LatentStatistics(statistics.Mean.clone(), statistics.Std.clone());
        _flow = new RectifiedFlow(config.TimestepShift);

        Ema = new DiT(model.Config);
        using (torch.no_grad())
        {
            var src = model.state_dict();
            foreach (var (k, t) in Ema.state_dict()) t.copy_(src[k]);
        }
        foreach (var p in Ema.parameters()) p.requires_grad = false;
        Ema.eval();
        var emaParams = Ema.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        _emaPairs = model.named_parameters().Select(p => (emaParams[p.name], p.parameter)).ToList();

        _trainable = model.parameters().Where(p => p.requires_grad).ToList();
        _opt = new Lean.AdamW(_trainable, lr: config.LearningRate, beta1: config.Beta1, beta2: config.Beta2, weight_decay: config.WeightDecay);
    }

    /// <summary>The dataset indices of step <paramref name="step"/>: consecutive slices of a per-epoch permutation.</summary>
    public IReadOnlyList<int> BatchIndices(long step)
    {
        int n = DatasetSize, b = Config.BatchSize;
        var result = new List<int>(b);
        long epoch = -1;
        long[]? perm = null;
        for (long k = step * b; k < (step + 1) * b; k++)
        {
            long e = k / n;
            if (e != epoch)
            {
                epoch = e;
                using var g = RunCheckpoint.StepGenerator(Config.Seed, e, OrderStream);
                using var p = torch.randperm(n, generator: g);
                perm = p.data<long>().ToArray();
            }
            result.Add((int)perm![k % n]);
        }
        return result;
    }

    Device ModelDevice => _trainable.Count > 0 ? _trainable[0].device : torch.CPU;

    /// <summary>Normalised latents and labels of the given dataset indices, on the model's device.</summary>
    (Tensor X1, Tensor Labels) Fetch(IReadOnlyList<int> indices, LatentCache? from = null)
    {
        var (latents, labels) = from != null ? from.Batch(indices) : _batches(indices);
        if (latents.dim() != 4 || latents.shape[0] != indices.Count || labels.dim() != 1 || labels.shape[0] != indices.Count)
            throw new SvgdException($"a training batch of {indices.Count} must be latents [B, C, h, w] and labels [B], got {Checkpoint.Shape(latents.shape)} and {Checkpoint.Shape(labels.shape)}");
        var device = ModelDevice;
        var x1 = Statistics.Normalize(latents.to(ScalarType.Float32, device));
        return (x1, labels.to(ScalarType.Int64, device));
    }

    /// <summary>
    /// Makes this trainer one of <paramref name="comm"/>'s processes: checks that every process has the same
    /// configuration, data and step (a mismatch fails on all of them), then gives every process rank 0's
    /// weights, EMA and optimiser state and verifies them by checksum. Every process must call it.
    /// </summary>
    public void Distribute(ICommunicator comm)
    {
        if (_buckets != null) throw new InvalidOperationException("the trainer is already distributed");
        _comm = comm;
        if (comm.Size == 1) return;
        if (Config.BatchSize < comm.Size)
            throw new SvgdException($"batch size {Config.BatchSize} is smaller than the {comm.Size} processes: each needs at least one sample per step") { Collective = true };
        string settings = string.Join("\n",
            $"model {ConfigJson.Serialize(Model.Config)}",
            $"training {ConfigJson.Serialize(Config)}",
            $"step {Step}",
            $"dataset {DatasetSize} latents{(Cache != null ? $", cache fingerprint {Cache.Index.Fingerprint}" : "")}",
            $"classes {string.Join(",", ClassNames ?? Array.Empty<string>())}",
            $"latent statistics {Replicas.Checksum(new[] { KeyValuePair.Create("mean", Statistics.Mean), KeyValuePair.Create("std", Statistics.Std) })}");
        Replicas.CheckSameSettings(comm, "configuration, dataset or step", settings);
        Replicas.Broadcast(comm, "model weights", Model.state_dict().ToList());
        Replicas.Broadcast(comm, "EMA weights", Ema.state_dict().ToList());
        Replicas.Broadcast(comm, "optimizer state", _opt);
        _buckets = new GradientBuckets(comm, Model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => (p.name, p.parameter)));
    }

    /// <summary>Fails on every process unless all hold the same weights (call on every process, e.g. before rank 0 saves).</summary>
    public void VerifyReplicas()
    {
        if (_comm.Size == 1) return;
        Replicas.Verify(_comm, "model weights", Model.state_dict());
        Replicas.Verify(_comm, "EMA weights", Ema.state_dict());
    }

    public DiTStepResult TrainStep()
    {
        using var scope = torch.NewDisposeScope();
        Model.train();
        int b = Config.BatchSize;
        var (first, count) = GlobalBatch.Shard(b, _comm.Rank, _comm.Size);
        var (x1, labels) = Fetch(BatchIndices(Step).Skip(first).Take(count).ToList());
        using var flowDraws = new SampleRandom(Config.Seed, Step, FlowStream, first, count);
        using var dropDraws = new SampleRandom(Config.Seed, Step, DropoutStream, first, count);
        using var batch = GlobalBatch.Enter(_comm, b, first, count, dropDraws);
        var t = flowDraws.Uniform().to(x1.dtype, x1.device);
        var z0 = flowDraws.Normal(x1.shape[1..]).to(x1.dtype, x1.device);
        var net = Model;
        if (_compute != null)
        {
            _compute.train();
            _mixed!.PullWeights();
            net = _compute;
        }
        using var flowLoss = _flow.Loss((x, tt, y) => net.Velocity(x, tt, y), x1, z0, t, labels);
        // This shard's share of the global-batch mean: summed over the processes it is that mean.
        var loss = flowLoss.Mse.sum() / b;
        PhaseProbe?.Invoke("forward");
        var values = new[] { (double)loss.item<float>() };
        _comm.AllreduceSum(values);
        double lossValue = values[0];
        if (!double.IsFinite(lossValue)) throw Collective(Finite.TrainingStop(Step + 1, $"the flow loss ({lossValue})"));
        if (_mixed != null) _mixed.DropMasterGradients();
        else _opt.zero_grad();
        loss.backward();
        PhaseProbe?.Invoke("backward");
        _mixed?.PushGradients();
        _buckets?.AllreduceSum();
        double gradNorm = ClipGradients();
        PhaseProbe?.Invoke("gradients");
        if (!double.IsFinite(gradNorm))
            throw Collective(Finite.TrainingStop(Step + 1, $"the gradient of {Finite.FirstBadGradient(Model.named_parameters()) ?? "the flow loss"} (norm {gradNorm})"));
        _opt.step();
        PhaseProbe?.Invoke("optimizer");
        UpdateEma();
        Step++;
        return new DiTStepResult(Step, lossValue, gradNorm);
    }

    // Computed from values summed over the processes: every process raises it at the same step.
    static SvgdException Collective(SvgdException e) => new(e.Message) { Collective = true };

    /// <summary>Trains until <see cref="DiTTrainingConfig.Steps"/>, calling <paramref name="onStep"/> after each step.</summary>
    /// <returns>The loss of every step taken.</returns>
    public IReadOnlyList<double> Train(Action<DiTStepResult>? onStep = null, CancellationToken cancel = default)
    {
        var losses = new List<double>();
        while (Step < Config.Steps)
        {
            cancel.ThrowIfCancellationRequested();
            var r = TrainStep();
            losses.Add(r.Loss);
            onStep?.Invoke(r);
        }
        return losses;
    }

    /// <summary>Global gradient norm (float64 sum of squares); scaled down to GradClip when it is larger, as clip_grad_norm_ does.</summary>
    double ClipGradients()
    {
        using var scope = torch.NewDisposeScope();
        var grads = _trainable.Select(p => p.grad).Where(g => g is not null).Select(g => g!).ToList();
        if (grads.Count == 0) return 0;
        var total = torch.zeros(Array.Empty<long>(), dtype: ScalarType.Float64, device: grads[0].device);
        foreach (var g in grads)
        {
            // Each gradient's float64 copy and square (pow 2 is square) in one reused buffer (the same values as
            // g.to(float64).square()): in one scope they would add up to four times the fp32 weights
            // (10.8 GB for SVG-XL), and allocated anew for each they churn the heap every step.
            using var inner = torch.NewDisposeScope();
            var wide = _clipScratch.Like(g, ScalarType.Float64) is Tensor s ? s.copy_(g).pow_(2) : g.to(ScalarType.Float64).square();
            total.add_(wide.sum());
        }
        double norm = Math.Sqrt(total.item<double>());
        if (Config.GradClip > 0)
        {
            double coef = Config.GradClip / (norm + 1e-6);
            if (coef < 1)
                using (torch.no_grad())
                    foreach (var g in grads) g.mul_(coef);
        }
        return norm;
    }

    void UpdateEma()
    {
        double d = Config.EmaDecay;
        using var _ = torch.no_grad();
        foreach (var (ema, p) in _emaPairs) ema.mul_(d).add_(p, alpha: 1 - d);
    }

    /// <summary>
    /// The flow loss on fixed noise and times (drawn from <paramref name="seed"/>), no label dropout:
    /// comparable across steps, unlike the training loss. Uses the EMA weights when <paramref name="ema"/>,
    /// and the latents of <paramref name="heldOut"/> (normalised with this run's statistics) when given.
    /// Always fp32, whatever <see cref="ComputePrecision"/> trains in.
    /// </summary>
    public double EvalLoss(IReadOnlyList<int> indices, long seed = 0, bool ema = false, LatentCache? heldOut = null)
    {
        var model = ema ? Ema : Model;
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            using var gen = new Generator((ulong)(seed & long.MaxValue));
            double sum = 0;
            for (int s = 0; s < indices.Count; s += Config.BatchSize)
            {
                var chunk = indices.Skip(s).Take(Config.BatchSize).ToList();
                var (x1, labels) = Fetch(chunk, heldOut);
                var t = torch.rand(x1.shape[0], generator: gen).to(x1.device);
                var z0 = torch.randn(x1.shape, generator: gen).to(x1.device);
                using var l = _flow.Loss(model, x1, z0, t, labels);
                sum += l.Mse.sum().item<float>();
            }
            return sum / indices.Count;
        }
        finally
        {
            if (wasTraining) model.train();
            // The packed copies this made (as large as the weights) are stale after the next step.
            Models.Common.PackedLinear.ReleasePacked(model);
        }
    }

    /// <summary>
    /// Samples latents with the EMA model for a preview grid: Euler (or Heun) over the shifted schedule,
    /// classifier-free guidance when <paramref name="cfg"/> != 1, de-normalised so they decode directly.
    /// </summary>
    /// <returns>[B, C, h, w] latents on the CPU.</returns>
    public Tensor Sample(IReadOnlyList<int> labels, int steps = 25, double cfg = 1.0, long seed = 0,
        string guidanceMode = "constant", double shift = Sampler.DefaultShift, string method = "euler")
    {
        try
        {
            return SampleLatents(Ema, Statistics, labels, steps, cfg, seed, guidanceMode, shift, method);
        }
        finally
        {
            // The EMA's packed copies (as large as its weights) would otherwise be held through the training
            // until the next grid, stale after the first EMA update.
            Models.Common.PackedLinear.ReleasePacked(Ema);
        }
    }

    /// <summary>Samples de-normalised latents [B, C, input_size, input_size] from any DiT (see <see cref="Sample"/>).</summary>
    public static Tensor SampleLatents(DiT model, LatentStatistics statistics, IReadOnlyList<int> labels, int steps = 25, double cfg = 1.0, long seed = 0,
        string guidanceMode = "constant", double shift = Sampler.DefaultShift, string method = "euler")
    {
        if (labels.Count == 0) throw new SvgdException("sampling needs at least one label");
        var c = model.Config;
        if (labels.Any(l => l < 0 || l >= c.NumClasses)) throw new SvgdException($"sample labels must be in [0, {c.NumClasses - 1}]");
        if (statistics.Channels != c.InChannels) throw new SvgdException($"latent statistics have {statistics.Channels} channels, the DiT takes {c.InChannels}");
        var guidance = GuidanceSchedule.Parse(cfg, guidanceMode);
        if (guidance.IsActive(true) && !c.HasNullClass)
            throw new SvgdException("classifier-free guidance needs a model trained with label dropout (class_dropout_prob > 0); use cfg 1");
        var sampler = Sampler.Create(method, steps, shift);
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            var device = model.parameters().First().device;
            using var gen = new Generator((ulong)(seed & long.MaxValue));
            var z = Sampler.Noise(new long[] { labels.Count, c.InChannels, c.InputSize, c.InputSize }, gen).to(device);
            var y = torch.tensor(labels.Select(l => (long)l).ToArray(), dtype: ScalarType.Int64, device: device);
            var nul = c.HasNullClass ? torch.full(labels.Count, model.NullLabel, dtype: ScalarType.Int64, device: device) : null;
            var x = sampler.Sample(model, z, y, nul, guidance);
            return statistics.Denormalize(x).cpu().MoveToOuterDisposeScope();
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }

    /// <summary>Everything needed to continue, in one safetensors written atomically: <c>model.*</c>, <c>ema.*</c>,
    /// the optimiser state, the latent statistics, the step and both configs. <see cref="DiTCheckpoint.Load"/> reads its EMA weights.</summary>
    public void Save(string path)
    {
        using var scope = torch.NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (k, t) in RunCheckpoint.Prefixed(ModelPrefix, Model.state_dict())) tensors[k] = t;
        foreach (var (k, t) in RunCheckpoint.Prefixed(EmaPrefix, Ema.state_dict())) tensors[k] = t;
        tensors[StatsMeanKey] = Statistics.Mean;
        tensors[StatsStdKey] = Statistics.Std;
        var meta = new Dictionary<string, string>
        {
            ["format"] = "pt",
            [KindKey] = KindValue,
            [DiTCheckpoint.ConfigMetadataKey] = ConfigJson.Serialize(Model.Config),
            [TrainingConfigKey] = ConfigJson.Serialize(Config),
            [StepKey] = Step.ToString(CultureInfo.InvariantCulture),
            [WorldSizeKey] = _comm.Size.ToString(CultureInfo.InvariantCulture),
        };
        if (ClassNames != null) meta[ClassNamesKey] = new JsonArray(ClassNames.Select(n => (JsonNode)n).ToArray()).ToJsonString();
        if (Cache != null) meta[LatentShapeKey] = new JsonArray(Cache.LatentShape.Select(d => (JsonNode)d).ToArray()).ToJsonString();
        RunCheckpoint.AddOptimizer(tensors, meta, OptimizerKey, _opt);
        Finite.BeforeSave(tensors, path);
        SafeTensors.Save(path, tensors, meta);
    }

    static SafeTensors.Header TrainingHeader(string path)
    {
        var header = SafeTensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue(KindKey, out var kind) || kind != KindValue)
            throw new SvgdException($"{path}: not a diffusion training checkpoint (no '{KindKey}: {KindValue}' metadata)");
        foreach (var key in new[] { DiTCheckpoint.ConfigMetadataKey, TrainingConfigKey, StepKey })
            if (!header.Metadata.ContainsKey(key)) throw new SvgdException($"{path}: training checkpoint metadata lacks '{key}'");
        return header;
    }

    /// <summary>Step, configs, class names and latent shape of a training checkpoint, from its header.</summary>
    public static DiTTrainingInfo ReadInfo(string path)
    {
        var meta = TrainingHeader(path).Metadata;
        var model = RunCheckpoint.Config<DiTConfig>(meta, DiTCheckpoint.ConfigMetadataKey, path).Validate(path);
        var training = RunCheckpoint.Config<DiTTrainingConfig>(meta, TrainingConfigKey, path);
        int step = RunCheckpoint.Step(meta, StepKey, path);
        var names = RunCheckpoint.List<string>(meta, ClassNamesKey, path);
        var shape = RunCheckpoint.List<long>(meta, LatentShapeKey, path);
        return new DiTTrainingInfo(step, model, training, names, shape);
    }

    /// <summary>The latent statistics a training checkpoint was trained with (to de-normalise its samples).</summary>
    public static LatentStatistics ReadStatistics(string path)
    {
        var header = SafeTensors.ReadHeader(path);
        if (!header.Tensors.Any(t => t.Name == StatsMeanKey) || !header.Tensors.Any(t => t.Name == StatsStdKey))
            throw new SvgdException($"{path}: holds no latent statistics ('{StatsMeanKey}', '{StatsStdKey}'); is it a diffusion training checkpoint?");
        var sd = SafeTensors.Load(path, new[] { StatsMeanKey, StatsStdKey });
        return new LatentStatistics(sd[StatsMeanKey], sd[StatsStdKey]);
    }

    /// <summary>Continues a run saved by <see cref="Save"/> on the same cache; <paramref name="steps"/> overrides the total step count.
    /// The trainer owns the model it rebuilds and disposes it with itself.</summary>
    public static DiTTrainer Resume(string path, LatentCache cache, int? steps = null)
    {
        var (model, config, stats) = ReadState(path, steps);
        using (stats)
        {
            var trainer = new DiTTrainer(model, cache, config, stats) { _ownsModel = true };
            trainer.Restore(path);
            return trainer;
        }
    }

    /// <summary>Continues a run saved by <see cref="Save"/> with latents produced on demand.</summary>
    public static DiTTrainer Resume(string path, Func<IReadOnlyList<int>, (Tensor Latents, Tensor Labels)> batches, int datasetSize, int? steps = null)
    {
        var (model, config, stats) = ReadState(path, steps);
        using (stats)
        {
            var trainer = new DiTTrainer(model, batches, datasetSize, config, stats, ReadInfo(path).ClassNames) { _ownsModel = true };
            trainer.Restore(path);
            return trainer;
        }
    }

    /// <summary>The model (its <c>model.*</c> weights), the configs and the statistics. The EMA weights and the optimiser
    /// state are read later, section by section, so a resume never holds the whole file in memory beside the trainer.</summary>
    static (DiT, DiTTrainingConfig, LatentStatistics) ReadState(string path, int? steps)
    {
        var info = ReadInfo(path);
        var config = steps is int s ? info.Training with { Steps = s } : info.Training;
        var header = SafeTensors.ReadHeader(path);
        if (!header.Tensors.Any(t => t.Name == StatsMeanKey) || !header.Tensors.Any(t => t.Name == StatsStdKey))
            throw new SvgdException($"{path}: training checkpoint lacks latent statistics");
        DiT model;
        // Every weight is overwritten by the strict load below: the random initialisation would be wasted (minutes for SVG-XL on 2 busy cores).
        using (WeightInit.SkipForLoad()) model = new DiT(info.Model);
        try { LoadSection(model, path, header, ModelPrefix); }
        catch { model.Dispose(); throw; }
        var sd = SafeTensors.Load(path, new[] { StatsMeanKey, StatsStdKey });
        return (model, config, new LatentStatistics(sd[StatsMeanKey], sd[StatsStdKey]));
    }

    /// <summary>Loads the tensors under <paramref name="prefix"/> into a module and frees them.</summary>
    static void LoadSection(DiT module, string path, SafeTensors.Header header, string prefix)
    {
        var sd = SafeTensors.Load(path, header.Tensors.Where(t => t.Name.StartsWith(prefix, StringComparison.Ordinal)).Select(t => t.Name));
        try { StateDictLoader.Load(module, RunCheckpoint.Section(sd, prefix), $"{path} ({prefix}*)"); }
        finally { foreach (var t in sd.Values) t.Dispose(); }
    }

    void Restore(string path)
    {
        using var file = SafeTensors.Open(path);
        LoadSection(Ema, path, file.Header, EmaPrefix);
        RunCheckpoint.RestoreOptimizer(_opt, file, OptimizerKey);
        Step = ReadInfo(path).Step;
        ResumedWorldSize = RunCheckpoint.WorldSize(file.Header.Metadata, WorldSizeKey, path);
    }

    public void Dispose()
    {
        _buckets?.Dispose();
        _opt.Dispose();
        _clipScratch.Dispose();
        Ema.Dispose();
        _compute?.Dispose();
        Statistics.Dispose();
        if (_ownsModel) Model.Dispose();
    }
}
