using SvgDiffusion.Checkpoints;
using SvgDiffusion.Distributed;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// Rescales the residual features onto the scale of the DINO features, so neither part of the latent
/// dominates the diffusion model's loss. Both sets are summarised by two scalars: the mean over channels
/// of the per-channel means, and the mean over channels of the per-channel unbiased standard deviations
/// (each channel taken over batch and tokens). Then
/// <c>aligned = (r - mean_r) / (std_r + eps) * std_d + mean_d</c>.
/// The statistics are constants for the gradient, as in the reference.
/// <para>
/// <see cref="AlignmentMode.Batch"/> computes them from the batch at hand (reference parity);
/// <see cref="AlignmentMode.Stored"/> uses the running values in this module's buffers, updated in
/// training mode or by <see cref="Accumulate"/>, so latents do not depend on batch-mates.
/// </para>
/// </summary>
public sealed class DistributionAlignment : nn.Module
{
    public AlignmentConfig Config { get; }

#pragma warning disable IDE0044 // registered by name as buffers, saved with the model
    Tensor semantic_mean;
    Tensor semantic_std;
    Tensor residual_mean;
    Tensor residual_std;
    Tensor num_batches_tracked;
#pragma warning restore IDE0044

    /// <summary>The mode in use; starts as the config's and can be switched for encoding (e.g. <c>--alignment stored</c>).</summary>
    public AlignmentMode Mode { get; set; }

    public DistributionAlignment(AlignmentConfig config) : base("alignment")
    {
        Config = config.Validate("alignment config");
        Mode = config.Mode;
        semantic_mean = torch.zeros(Array.Empty<long>());
        semantic_std = torch.ones(Array.Empty<long>());
        residual_mean = torch.zeros(Array.Empty<long>());
        residual_std = torch.ones(Array.Empty<long>());
        num_batches_tracked = torch.zeros(Array.Empty<long>(), dtype: ScalarType.Int64);
        RegisterComponents();
    }

    /// <summary>True once running statistics exist (the released checkpoint carries none).</summary>
    public bool HasStoredStatistics => num_batches_tracked.item<long>() > 0;

    /// <summary>(semantic mean, semantic std, residual mean, residual std) as stored.</summary>
    public (double SemanticMean, double SemanticStd, double ResidualMean, double ResidualStd) Stored =>
        (semantic_mean.item<float>(), semantic_std.item<float>(), residual_mean.item<float>(), residual_std.item<float>());

    /// <summary>Scalar summary of [B, C, N] features: channel-average of per-channel mean and unbiased std over (B, N).</summary>
    public static (Tensor Mean, Tensor Std) Statistics(Tensor features)
    {
        if (features.dim() != 3) throw new SvgdException($"alignment statistics need [B, C, N] features, got {Checkpoint.Shape(features.shape)}");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var dims = new long[] { 0, 2 };
        var mean = features.mean(dims).mean();
        var std = features.std(dims, unbiased: true).mean();
        return (mean.MoveToOuterDisposeScope(), std.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="Statistics"/> over the whole global batch when a training step splits it over processes
    /// (<see cref="GlobalBatch"/>): per-channel sums over all ranks, then the centred sums of squares, in
    /// float64 — the two passes of a single-process mean and unbiased std.
    /// </summary>
    public static (Tensor Mean, Tensor Std) GlobalStatistics(Tensor features, ICommunicator comm)
    {
        if (comm.Size == 1) return Statistics(features);
        if (features.dim() != 3) throw new SvgdException($"alignment statistics need [B, C, N] features, got {Checkpoint.Shape(features.shape)}");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var dims = new long[] { 0, 2 };
        var x = features.to(ScalarType.Float64);
        var counts = new[] { (double)(features.shape[0] * features.shape[2]) };
        comm.AllreduceSum(counts);
        var sum = x.sum(dims).contiguous();
        comm.AllreduceSum(sum);
        var channelMean = sum / counts[0];
        var squares = (x - channelMean.view(1, -1, 1)).square().sum(dims).contiguous();
        comm.AllreduceSum(squares);
        var channelStd = (squares / (counts[0] - 1)).sqrt();
        var dtype = features.dtype;
        return (channelMean.mean().to(dtype).MoveToOuterDisposeScope(), channelStd.mean().to(dtype).MoveToOuterDisposeScope());
    }

    /// <param name="semantic">[B, D, N] DINO patch features.</param>
    /// <param name="residual">[B, R, N] residual features.</param>
    /// <returns>The residual features on the DINO scale, [B, R, N].</returns>
    public Tensor Forward(Tensor semantic, Tensor residual)
    {
        using var scope = torch.NewDisposeScope();
        if (Mode == AlignmentMode.None) return residual.alias().MoveToOuterDisposeScope();
        Tensor sm, ss, rm, rs;
        // Training always sees batch statistics (what the reference trains with) and feeds the running ones.
        if (training || Mode == AlignmentMode.Batch)
        {
            // A training step split over processes normalises with the statistics of its whole batch.
            var comm = training && GlobalBatch.Current is { IsSharded: true } batch ? batch.Comm : SingleProcess.Instance;
            (sm, ss) = GlobalStatistics(semantic, comm);
            (rm, rs) = GlobalStatistics(residual, comm);
            if (training) Update(sm, ss, rm, rs, Config.Momentum);
        }
        else
        {
            if (!HasStoredStatistics)
                throw new SvgdException("alignment mode 'stored' needs running statistics, but this model has none (the released checkpoint keeps none): calibrate them first, or use mode 'batch'");
            (sm, ss, rm, rs) = (semantic_mean, semantic_std, residual_mean, residual_std);
        }
        var aligned = (residual - rm.to(residual.dtype)) / (rs.to(residual.dtype) + Config.Eps) * ss.to(residual.dtype) + sm.to(residual.dtype);
        return aligned.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Folds one batch into the stored statistics as an equal-weight running average over the batches
    /// accumulated since <see cref="ResetStatistics"/>: calibrates a model trained without them.
    /// </summary>
    public void Accumulate(Tensor semantic, Tensor residual)
    {
        using var scope = torch.NewDisposeScope();
        var (sm, ss) = Statistics(semantic);
        var (rm, rs) = Statistics(residual);
        Update(sm, ss, rm, rs, 1.0 / (num_batches_tracked.item<long>() + 1));
    }

    public void ResetStatistics()
    {
        using var _ = torch.no_grad();
        semantic_mean.zero_(); residual_mean.zero_();
        semantic_std.fill_(1); residual_std.fill_(1);
        num_batches_tracked.zero_();
    }

    void Update(Tensor sm, Tensor ss, Tensor rm, Tensor rs, double weight)
    {
        using var _ = torch.no_grad();
        // The first batch replaces the placeholders rather than being averaged with them.
        double w = HasStoredStatistics ? weight : 1.0;
        foreach (var (buffer, value) in new[] { (semantic_mean, sm), (semantic_std, ss), (residual_mean, rm), (residual_std, rs) })
            buffer.lerp_(value.to(buffer.dtype, buffer.device), w);
        num_batches_tracked.add_(1);
    }
}
