using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Data;
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
/// </summary>
public sealed class AutoencoderTrainer : IDisposable
{
    public const string KindValue = "svg_autoencoder_training";
    const string TrainingConfigKey = "svgd.autoencoder_training_config", StepKey = "svgd.step", KindKey = "svgd.kind";
    const string DiscPrefix = "loss.discriminator.";

    public ILatentAutoencoder Model { get; }
    public PatchDiscriminator Discriminator { get; }
    public Lpips? Perceptual { get; }
    public AutoencoderTrainingConfig Config { get; }
    public ImageFolder Data { get; }
    public int Step { get; private set; }
    public int ImageSize => Model.ImageSize;

    readonly Adam _optAe, _optDisc;
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
        _optAe = torch.optim.Adam(_trainable, config.LearningRate, config.Beta1, config.Beta2);
        _optDisc = torch.optim.Adam(Discriminator.parameters(), config.LearningRate, config.Beta1, config.Beta2);
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

    public AutoencoderStepResult TrainStep()
    {
        using var scope = torch.NewDisposeScope();
        Model.Module.train();
        Discriminator.train();
        using var dataGen = RunCheckpoint.StepGenerator(Config.Seed, Step, 0);
        using var maskGen = RunCheckpoint.StepGenerator(Config.Seed, Step, 1);
        torch.manual_seed(Config.Seed * 31 + Step);                     // dropout in the residual ViT
        var images = Data.TrainingBatch(BatchIndices(Step), ImageSize, dataGen);
        var encoding = Model.EncodeForTraining(images, maskGen);
        var rec = Model.Decode(encoding.Latent);

        var l1 = (images - rec).abs().mean();
        Tensor perceptual = Perceptual != null ? Perceptual.Forward(images, rec).mean() : torch.zeros(Array.Empty<long>());
        var nll = Perceptual != null ? l1 + Config.PerceptualWeight * perceptual : l1;
        // The KL term joins after the adaptive weight is taken, from the reconstruction terms alone (as LDM's LPIPSWithDiscriminator).
        var kl = encoding.Kl ?? torch.zeros(Array.Empty<long>());
        bool gan = Step >= Config.DiscStart;
        Tensor loss = nll + Config.KlWeight * kl, gLoss = torch.zeros(Array.Empty<long>());
        double weight = 0;
        if (gan)
        {
            gLoss = -Discriminator.forward(rec).mean();
            weight = AdaptiveWeight(nll, gLoss) * Config.DiscWeight;
            loss = loss + weight * gLoss;
        }
        // Every loss is read before any optimiser moves, so a non-finite one stops the run with finite weights.
        double l1Value = l1.item<float>(), perceptualValue = perceptual.item<float>(), gValue = gLoss.item<float>(), lossValue = loss.item<float>(), klValue = kl.item<float>();
        if (!double.IsFinite(l1Value)) throw Finite.TrainingStop(Step + 1, $"the l1 loss ({l1Value})");
        if (!double.IsFinite(perceptualValue)) throw Finite.TrainingStop(Step + 1, $"the lpips loss ({perceptualValue})");
        if (!double.IsFinite(klValue)) throw Finite.TrainingStop(Step + 1, $"the KL term ({klValue})");
        if (!double.IsFinite(gValue)) throw Finite.TrainingStop(Step + 1, $"the generator loss ({gValue})");
        if (!double.IsFinite(weight) || !double.IsFinite(lossValue)) throw Finite.TrainingStop(Step + 1, $"the total loss ({lossValue}, adaptive weight {weight})");
        _optAe.zero_grad();
        loss.backward();
        if (Finite.FirstBadGradient(Model.Module.named_parameters()) is string badAe) throw Finite.TrainingStop(Step + 1, $"the gradient of {badAe}");
        _optAe.step();

        double dLoss = 0;
        if (gan)
        {
            _optDisc.zero_grad();
            var d = PatchDiscriminator.HingeLoss(Discriminator.forward(images.detach()), Discriminator.forward(rec.detach()));
            dLoss = d.item<float>();
            if (!double.IsFinite(dLoss)) throw Finite.TrainingStop(Step + 1, $"the discriminator loss ({dLoss})");
            d.backward();
            if (Finite.FirstBadGradient(Discriminator.named_parameters()) is string badD) throw Finite.TrainingStop(Step + 1, $"the gradient of {DiscPrefix}{badD}");
            _optDisc.step();
        }
        var result = new AutoencoderStepResult(Step + 1, lossValue, l1Value, perceptualValue, gValue, dLoss, weight, klValue);
        Step++;
        return result;
    }

    /// <summary>||grad nll|| / (||grad gan|| + 1e-4) at the decoder's last layer, clamped to [0, 1e4].</summary>
    double AdaptiveWeight(Tensor nll, Tensor gLoss)
    {
        var last = Model.Decoder.LastLayerWeight;
        var gNll = torch.autograd.grad(new[] { nll }, new[] { (Tensor)last }, retain_graph: true)[0];
        var gGan = torch.autograd.grad(new[] { gLoss }, new[] { (Tensor)last }, retain_graph: true)[0];
        double w = gNll.norm().item<float>() / (gGan.norm().item<float>() + 1e-4);
        return Math.Clamp(w, 0.0, 1e4);
    }

    /// <summary>Originals (top rows) over reconstructions (bottom rows), in [-1, 1], of images spread evenly over the folder (and so over its classes).</summary>
    public Tensor ReconstructionGrid(int count = 8)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        Model.Module.eval();
        int n = Math.Min(count, Data.Count);
        var idx = Enumerable.Range(0, n).Select(i => (int)((long)i * Data.Count / n)).ToList();
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
        tensors["optimizer.autoencoder"] = RunCheckpoint.OptimizerBlob(_optAe);
        tensors["optimizer.discriminator"] = RunCheckpoint.OptimizerBlob(_optDisc);
        Finite.BeforeSave(tensors, path);
        meta[KindKey] = KindValue;
        meta[TrainingConfigKey] = ConfigJson.Serialize(Config);
        meta[StepKey] = Step.ToString(System.Globalization.CultureInfo.InvariantCulture);
        SafeTensors.Save(path, tensors, meta);
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
        var sd = SafeTensors.Load(path);
        StateDictLoader.Load(trainer.Discriminator, RunCheckpoint.Section(sd, DiscPrefix), path);
        RunCheckpoint.RestoreOptimizer(trainer._optAe, sd["optimizer.autoencoder"], path, "optimizer.autoencoder");
        RunCheckpoint.RestoreOptimizer(trainer._optDisc, sd["optimizer.discriminator"], path, "optimizer.discriminator");
        trainer.Step = RunCheckpoint.Step(header.Metadata, StepKey, path);
        return trainer;
    }

    public void Dispose()
    {
        _optAe.Dispose();
        _optDisc.Dispose();
        Discriminator.Dispose();
    }
}
