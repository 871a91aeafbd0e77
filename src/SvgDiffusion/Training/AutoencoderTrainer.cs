using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
using SvgDiffusion.Distributed;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Losses;
using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

public sealed record AutoencoderStepResult(int Step, double Loss, double L1, double Perceptual, double GeneratorLoss, double DiscriminatorLoss, double AdaptiveWeight, double Kl = 0);

/// <summary>
/// Trains an autoencoder: the residual encoder, decoder and mask token of an SVG autoencoder (its frozen
/// encoder stays frozen), or all of a VAE baseline, with L1 + LPIPS (when its weights are given) + a
/// PatchGAN hinge loss whose generator weight adapts to the ratio of gradient norms at the decoder's last
/// layer, as in taming-transformers and the reference; a VAE adds <c>kl_weight</c> x its KL term (LDM's recipe).
/// <para>Every random draw of step s (batch order, crops, flips, masking, dropout) is derived from
/// (seed, s), so a run resumed from a checkpoint continues bit-for-bit like one never stopped.</para>
/// <para>Data parallel (<see cref="Distribute"/>): each process computes a contiguous shard of the global
/// batch. Crops, flips, masking and dropout are drawn per sample from (seed, step, global sample index);
/// every loss is the shard's share of its global-batch mean and gradients are summed over processes; the
/// batch statistics (latent alignment, PatchGAN BatchNorm) are those of the global batch; and the adaptive
/// GAN weight is the ratio of the norms of the global gradients at the decoder's last layer (the two local
/// gradients are summed over processes before their norms are taken: a norm of sums, not a sum of norms).
/// N processes so take the step one process takes with the same batch.</para>
/// </summary>
public sealed class AutoencoderTrainer : IDisposable
{
    public const string KindValue = "svg_autoencoder_training";
    const string TrainingConfigKey = "svgd.autoencoder_training_config", StepKey = "svgd.step", KindKey = "svgd.kind", WorldSizeKey = "svgd.world_size";
    // Streams of the per-sample draws of a step.
    const int DataStream = 0, MaskStream = 1, DropoutStream = 2;
    const string DiscPrefix = "loss.discriminator.";
    const string AutoencoderOptimizerKey = "optimizer.autoencoder", DiscriminatorOptimizerKey = "optimizer.discriminator";

    public ILatentAutoencoder Model { get; }
    public PatchDiscriminator Discriminator { get; }
    public Lpips? Perceptual { get; }
    public AutoencoderTrainingConfig Config { get; }
    public ImageFolder Data { get; }
    public int Step { get; private set; }
    public int ImageSize => Model.ImageSize;
    /// <summary>The processes training together (1 until <see cref="Distribute"/>).</summary>
    public ICommunicator Comm => _comm;
    /// <summary>How many processes trained the run this trainer resumed (1 for checkpoints that do not say); null for a new run.</summary>
    public int? ResumedWorldSize { get; private set; }
    /// <summary>The autoencoder's gradient allreduce of a data-parallel run (null in one process).</summary>
    public GradientBuckets? Allreduce => _aeBuckets;

    ICommunicator _comm = SingleProcess.Instance;
    GradientBuckets? _aeBuckets, _discBuckets;

    /// <summary>
    /// fp32, or bf16 mixed precision: every convolution of the step (decoder, LPIPS, PatchGAN, conv patch
    /// embeddings) runs in bf16 under <see cref="Autocast"/> while weights, optimiser state, losses and
    /// norm statistics stay fp32. Not part of the run's configuration: a run may resume in either.
    /// </summary>
    public ScalarType ComputePrecision
    {
        get => _autocast ?? ScalarType.Float32;
        set => _autocast = value switch
        {
            ScalarType.Float32 => null,
            ScalarType.BFloat16 => value,
            _ => throw new SvgdException($"autoencoder training runs in fp32 or bf16, not {Runtime.Precision.Name(value)}"),
        };
    }
    ScalarType? _autocast;

    readonly Lean.Adam _optAe, _optDisc;
    readonly List<Parameter> _trainable;

    public AutoencoderTrainer(ILatentAutoencoder model, ImageFolder data, AutoencoderTrainingConfig config, Lpips? perceptual = null)
    {
        Model = model;
        Data = data;
        Config = config.Validate();
        Perceptual = perceptual;
        using (torch.NewDisposeScope())
        {
            torch.manual_seed(config.Seed);
            Discriminator = new PatchDiscriminator(layers: config.DiscLayers);
        }
        _trainable = model.TrainableParameters().ToList();
        _optAe = new Lean.Adam(_trainable, config.LearningRate, config.Beta1, config.Beta2);
        _optDisc = new Lean.Adam(Discriminator.parameters(), config.LearningRate, config.Beta1, config.Beta2);
    }

    /// <summary>
    /// The peak memory of a training step at <paramref name="batch"/> images in this process: the trained parameters
    /// (autoencoder and discriminator) with gradients and Adam's moments, the frozen ones (semantic encoder, LPIPS)
    /// as weights, and activations per image at this resolution and <see cref="ComputePrecision"/>.
    /// </summary>
    public MemoryEstimate EstimateMemory(int batch, string name)
    {
        long trainable = _trainable.Sum(p => p.numel()) + Discriminator.parameters().Sum(p => p.numel());
        long frozen = Model.Module.parameters().Sum(p => p.numel()) - _trainable.Sum(p => p.numel()) + (Perceptual?.parameters().Sum(p => p.numel()) ?? 0);
        return TrainingMemory.Autoencoder(name, trainable, frozen, ImageSize, batch, ComputePrecision == ScalarType.BFloat16);
    }

    /// <summary>The image indices of step <paramref name="step"/>: consecutive slices of a per-epoch permutation.</summary>
    public IReadOnlyList<int> BatchIndices(long step)
    {
        int n = Data.Count, b = Config.BatchSize;
        var result = new List<int>(b);
        long first = step * b;
        long epoch = -1;
        long[]? perm = null;
        for (long k = first; k < first + b; k++)
        {
            long e = k / n;
            if (e != epoch)
            {
                epoch = e;
                using var g = RunCheckpoint.StepGenerator(Config.Seed, e, 99);
                using var p = torch.randperm(n, generator: g);
                perm = p.data<long>().ToArray();
            }
            result.Add((int)perm![k % n]);
        }
        return result;
    }

    /// <summary>
    /// Makes this trainer one of <paramref name="comm"/>'s processes: checks that every process has the same
    /// configuration, images and step (a mismatch fails on all of them), then gives every process rank 0's
    /// weights, discriminator and optimiser states and verifies them by checksum. Every process must call it.
    /// </summary>
    public void Distribute(ICommunicator comm)
    {
        if (_aeBuckets != null) throw new InvalidOperationException("the trainer is already distributed");
        _comm = comm;
        if (comm.Size == 1) return;
        if (Config.BatchSize < comm.Size)
            throw new SvgdException($"batch size {Config.BatchSize} is smaller than the {comm.Size} processes: each needs at least one image per step") { Collective = true };
        bool folder = Directory.Exists(Data.Root);
        var files = Data.Files.Select((f, i) => $"{(folder ? Path.GetRelativePath(Data.Root, f).Replace('\\', '/') : Path.GetFileName(f))}:{Data.Labels[i]}");
        string settings = string.Join("\n",
            $"model {string.Join(" ", Model.ToFile().Metadata.Where(kv => kv.Key != "format").OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => kv.Value))}",
            $"training {ConfigJson.Serialize(Config)}",
            $"step {Step}",
            $"images {Data.Count} in classes {string.Join(",", Data.ClassNames)}",
            $"image files {Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(string.Join("\n", files))))}",
            $"lpips {(Perceptual == null ? "off" : Replicas.Checksum(Perceptual.state_dict()))}");
        Replicas.CheckSameSettings(comm, "configuration, image folder or step", settings);
        Replicas.Broadcast(comm, "autoencoder weights", Model.Module.state_dict().ToList());
        Replicas.Broadcast(comm, "discriminator weights", Discriminator.state_dict().ToList());
        Replicas.Broadcast(comm, "autoencoder optimizer state", _optAe);
        Replicas.Broadcast(comm, "discriminator optimizer state", _optDisc);
        var trainable = _trainable.ToHashSet();
        _aeBuckets = new GradientBuckets(comm, Model.Module.named_parameters().Where(p => trainable.Contains(p.parameter)).Select(p => (p.name, p.parameter)));
        _discBuckets = new GradientBuckets(comm, Discriminator.named_parameters().Select(p => (DiscPrefix + p.name, p.parameter)));
    }

    /// <summary>Fails on every process unless all hold the same weights (call on every process, e.g. before rank 0 saves).</summary>
    public void VerifyReplicas()
    {
        if (_comm.Size == 1) return;
        Replicas.Verify(_comm, "autoencoder weights", Model.Module.state_dict());
        Replicas.Verify(_comm, "discriminator weights", Discriminator.state_dict());
    }

    // Computed from values summed over the processes: every process raises it at the same step.
    SvgdException Stop(string what) => new(Finite.TrainingStop(Step + 1, what).Message) { Collective = true };

    public AutoencoderStepResult TrainStep()
    {
        using var scope = torch.NewDisposeScope();
        Model.Module.train();
        Discriminator.train();
        int b = Config.BatchSize;
        var (first, count) = GlobalBatch.Shard(b, _comm.Rank, _comm.Size);
        double share = (double)count / b;
        using var dataDraws = new SampleRandom(Config.Seed, Step, DataStream, first, count);
        using var maskDraws = new SampleRandom(Config.Seed, Step, MaskStream, first, count);
        using var dropDraws = new SampleRandom(Config.Seed, Step, DropoutStream, first, count);
        using var batch = GlobalBatch.Enter(_comm, b, first, count, dropDraws);
        using var autocast = Autocast.Enter(_autocast);
        var images = Data.TrainingBatch(BatchIndices(Step).Skip(first).Take(count).ToList(), ImageSize, dataDraws);
        var encoding = Model.EncodeForTraining(images, maskDraws);
        var rec = Model.Decode(encoding.Latent);

        // Every term is this shard's share of its global-batch mean: summed over the processes, it is that mean.
        var l1 = (images - rec).abs().mean() * share;
        Tensor perceptual = Perceptual != null ? Perceptual.Forward(images, rec).mean() * share : torch.zeros(Array.Empty<long>());
        var nll = Perceptual != null ? l1 + Config.PerceptualWeight * perceptual : l1;
        // The KL term joins after the adaptive weight is taken, from the reconstruction terms alone (as LDM's LPIPSWithDiscriminator).
        var kl = encoding.Kl is Tensor perSample ? perSample.mean() * share : torch.zeros(Array.Empty<long>());
        bool gan = Step >= Config.DiscStart;
        Tensor loss = nll + Config.KlWeight * kl, gLoss = torch.zeros(Array.Empty<long>());
        double weight = 0;
        if (gan)
        {
            gLoss = -Discriminator.forward(rec).mean() * share;
            weight = AdaptiveWeight(nll, gLoss) * Config.DiscWeight;
            loss = loss + weight * gLoss;
        }
        // Every loss is read (summed over the processes) before any optimiser moves, so a non-finite one stops the run with finite weights.
        var values = new double[] { l1.item<float>(), perceptual.item<float>(), gLoss.item<float>(), loss.item<float>(), kl.item<float>() };
        _comm.AllreduceSum(values);
        var (l1Value, perceptualValue, gValue, lossValue, klValue) = (values[0], values[1], values[2], values[3], values[4]);
        if (!double.IsFinite(l1Value)) throw Stop($"the l1 loss ({l1Value})");
        if (!double.IsFinite(perceptualValue)) throw Stop($"the lpips loss ({perceptualValue})");
        if (!double.IsFinite(klValue)) throw Stop($"the KL term ({klValue})");
        if (!double.IsFinite(gValue)) throw Stop($"the generator loss ({gValue})");
        if (!double.IsFinite(weight) || !double.IsFinite(lossValue)) throw Stop($"the total loss ({lossValue}, adaptive weight {weight})");
        _optAe.zero_grad();
        loss.backward();
        _aeBuckets?.AllreduceSum();
        if (Finite.FirstBadGradient(Model.Module.named_parameters()) is string badAe) throw Stop($"the gradient of {badAe}");
        _optAe.step();

        double dLoss = 0;
        if (gan)
        {
            _optDisc.zero_grad();
            var d = PatchDiscriminator.HingeLoss(Discriminator.forward(images.detach()), Discriminator.forward(rec.detach())) * share;
            var dValues = new double[] { d.item<float>() };
            _comm.AllreduceSum(dValues);
            dLoss = dValues[0];
            if (!double.IsFinite(dLoss)) throw Stop($"the discriminator loss ({dLoss})");
            d.backward();
            _discBuckets?.AllreduceSum();
            if (Finite.FirstBadGradient(Discriminator.named_parameters()) is string badD) throw Stop($"the gradient of {DiscPrefix}{badD}");
            _optDisc.step();
        }
        var result = new AutoencoderStepResult(Step + 1, lossValue, l1Value, perceptualValue, gValue, dLoss, weight, klValue);
        Step++;
        return result;
    }

    /// <summary>||grad nll|| / (||grad gan|| + 1e-4) at the decoder's last layer, clamped to [0, 1e4]: gradients of
    /// the global-batch losses, i.e. this process's shares summed over the processes before the norms.</summary>
    double AdaptiveWeight(Tensor nll, Tensor gLoss)
    {
        var last = Model.Decoder.LastLayerWeight;
        var gNll = torch.autograd.grad(new[] { nll }, new[] { (Tensor)last }, retain_graph: true)[0];
        var gGan = torch.autograd.grad(new[] { gLoss }, new[] { (Tensor)last }, retain_graph: true)[0];
        if (_comm.Size > 1)
        {
            var both = torch.stack(new[] { gNll, gGan }).contiguous();
            _comm.AllreduceSum(both);
            (gNll, gGan) = (both[0], both[1]);
        }
        double w = gNll.norm().item<float>() / (gGan.norm().item<float>() + 1e-4);
        return Math.Clamp(w, 0.0, 1e4);
    }

    /// <summary>
    /// Mean L1 reconstruction error of centre-cropped images (no masking, no dropout, fp32 whatever
    /// <see cref="ComputePrecision"/> trains in) of <paramref name="heldOut"/> or the training folder:
    /// comparable across steps and runs, unlike the training loss.
    /// </summary>
    public double EvalL1(IReadOnlyList<int> indices, ImageFolder? heldOut = null)
    {
        var folder = heldOut ?? Data;
        bool wasTraining = Model.Module.training;
        Model.Module.eval();
        try
        {
            using var scope = torch.NewDisposeScope();
            using var _ = torch.no_grad();
            double sum = 0;
            for (int s = 0; s < indices.Count; s += Config.BatchSize)
            {
                var images = folder.CenterBatch(indices.Skip(s).Take(Config.BatchSize).ToList(), ImageSize);
                var rec = Model.Decode(Model.EncodeImages(images));
                sum += (images - rec).abs().mean(new long[] { 1, 2, 3 }).sum().item<float>();
            }
            return sum / indices.Count;
        }
        finally { Model.Module.train(wasTraining); }
    }

    /// <summary>Originals (top rows) over reconstructions (bottom rows), in [-1, 1], of images spread evenly over the folder (and so over its classes).</summary>
    public Tensor ReconstructionGrid(int count = 8)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        Model.Module.eval();
        var idx = Evaluation.SampleQuality.Spread(Data.Count, count);
        var images = Data.CenterBatch(idx, ImageSize);
        var rec = Model.Decode(Model.EncodeImages(images)).clamp(-1, 1);
        return ImageFiles.Grid(torch.cat(new[] { images, rec }), idx.Count).MoveToOuterDisposeScope();
    }

    /// <summary>Everything needed to continue: weights (reference layout, usable as an autoencoder file),
    /// discriminator, both optimisers, alignment statistics, step, and both configs.</summary>
    public void Save(string path)
    {
        using var scope = torch.NewDisposeScope();
        var (tensors, meta) = Model.ToFile();
        foreach (var (k, t) in RunCheckpoint.Prefixed(DiscPrefix, Discriminator.state_dict())) tensors[k] = t;
        RunCheckpoint.AddOptimizer(tensors, meta, AutoencoderOptimizerKey, _optAe);
        RunCheckpoint.AddOptimizer(tensors, meta, DiscriminatorOptimizerKey, _optDisc);
        Finite.BeforeSave(tensors, path);
        meta[KindKey] = KindValue;
        meta[TrainingConfigKey] = ConfigJson.Serialize(Config);
        meta[StepKey] = Step.ToString(System.Globalization.CultureInfo.InvariantCulture);
        meta[WorldSizeKey] = _comm.Size.ToString(System.Globalization.CultureInfo.InvariantCulture);
        SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>The step and training config a checkpoint written by <see cref="Save"/> records, read from its header alone.</summary>
    public static (int Step, AutoencoderTrainingConfig Config) ReadProgress(string path)
    {
        var header = SafeTensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue(KindKey, out var kind) || kind != KindValue)
            throw new SvgdException($"{path}: not an autoencoder training checkpoint (no '{KindKey}: {KindValue}' metadata)");
        return (RunCheckpoint.Step(header.Metadata, StepKey, path), RunCheckpoint.Config<AutoencoderTrainingConfig>(header.Metadata, TrainingConfigKey, path));
    }

    /// <summary>Continues a run saved by <see cref="Save"/>; <paramref name="steps"/> overrides the total step count.</summary>
    public static AutoencoderTrainer Resume(string path, ImageFolder data, Lpips? perceptual = null, int? steps = null)
    {
        var header = SafeTensors.ReadHeader(path);
        if (!header.Metadata.TryGetValue(KindKey, out var kind) || kind != KindValue)
            throw new SvgdException($"{path}: not an autoencoder training checkpoint (no '{KindKey}: {KindValue}' metadata); to fine-tune released weights use --init");
        var config = RunCheckpoint.Config<AutoencoderTrainingConfig>(header.Metadata, TrainingConfigKey, path);
        if (steps is int s) config = config with { Steps = s };
        var model = AutoencoderFile.Load(path);
        var trainer = new AutoencoderTrainer(model, data, config, perceptual);
        using var file = SafeTensors.Open(path);
        var sd = header.Tensors.Where(t => t.Name.StartsWith(DiscPrefix, StringComparison.Ordinal)).ToDictionary(t => t.Name[DiscPrefix.Length..], t => file.Read(t.Name));
        try { StateDictLoader.Load(trainer.Discriminator, sd, path); }
        finally { foreach (var t in sd.Values) t.Dispose(); }
        RunCheckpoint.RestoreOptimizer(trainer._optAe, file, AutoencoderOptimizerKey);
        RunCheckpoint.RestoreOptimizer(trainer._optDisc, file, DiscriminatorOptimizerKey);
        trainer.Step = RunCheckpoint.Step(header.Metadata, StepKey, path);
        trainer.ResumedWorldSize = RunCheckpoint.WorldSize(header.Metadata, WorldSizeKey, path);
        return trainer;
    }

    public void Dispose()
    {
        _aeBuckets?.Dispose();
        _discBuckets?.Dispose();
        _optAe.Dispose();
        _optDisc.Dispose();
        Discriminator.Dispose();
    }
}
