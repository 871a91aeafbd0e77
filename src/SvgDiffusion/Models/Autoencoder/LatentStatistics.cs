using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// Per-channel mean and std of SVG latents over a dataset. Diffusion runs on (z - mean) / std, so every
/// channel has unit scale; samples are mapped back before decoding. The released file
/// (<c>dinov3_sp_stats.pt</c>) holds <c>dinov3_sp_mean</c> and <c>dinov3_sp_std</c>, float32 [1, 1, C].
/// </summary>
public sealed class LatentStatistics : IDisposable
{
    public const string MeanKey = "dinov3_sp_mean", StdKey = "dinov3_sp_std";

    /// <summary>[1, 1, C]: broadcasts over tokens [B, T, C].</summary>
    public Tensor Mean { get; }
    public Tensor Std { get; }
    public int Channels => (int)Mean.shape[^1];

    public LatentStatistics(Tensor mean, Tensor std)
    {
        // Owned (and disposed) by this object, whatever dispose scope it is created in.
        Mean = mean.to(ScalarType.Float32).reshape(1, 1, -1).DetachFromDisposeScope();
        Std = std.to(ScalarType.Float32).reshape(1, 1, -1).DetachFromDisposeScope();
        if (Mean.shape[2] != Std.shape[2]) throw new SvgdException($"latent statistics: mean has {Mean.shape[2]} channels, std {Std.shape[2]}");
    }

    /// <summary>Reads the released .pt or our safetensors (the same two keys; any key pair ending in _mean/_std, or a diffusion training checkpoint's stats.mean/stats.std, also works).</summary>
    public static LatentStatistics Load(string path)
    {
        var sd = Checkpoint.Open(path).StateDict();
        // "stats.mean"/"stats.std": the statistics saved in a diffusion training checkpoint.
        string? m = sd.ContainsKey(MeanKey) ? MeanKey : sd.Keys.FirstOrDefault(k => k.EndsWith("_mean") || k == "mean" || k == "stats.mean");
        string? s = sd.ContainsKey(StdKey) ? StdKey : sd.Keys.FirstOrDefault(k => k.EndsWith("_std") || k == "std" || k == "stats.std");
        if (m == null || s == null)
            throw new SvgdException($"{path}: not a latent statistics file: needs '{MeanKey}' and '{StdKey}' (found: {string.Join(", ", sd.Keys.Take(6))})");
        var stats = new LatentStatistics(sd[m], sd[s]);
        if (!torch.isfinite(stats.Std).all().item<bool>() || (stats.Std <= 0).any().item<bool>())
            throw new SvgdException($"{path}: '{s}' must be finite and positive");
        if (!torch.isfinite(stats.Mean).all().item<bool>())
            throw new SvgdException($"{path}: '{m}' holds NaN or Inf values");
        return stats;
    }

    public void Save(string path) =>
        SafeTensors.Save(path, new Dictionary<string, Tensor> { [MeanKey] = Mean, [StdKey] = Std },
            new Dictionary<string, string> { ["svgd.kind"] = "latent_statistics" });

    /// <summary>Exact per-channel statistics over all tokens of all latents, accumulated in float64.</summary>
    public sealed class Accumulator
    {
        Tensor? _sum, _sumSq;
        long _count;

        /// <param name="latents">[B, C, h, w] or tokens [B, T, C].</param>
        public void Add(Tensor latents, bool channelsFirst = true)
        {
            using var scope = torch.NewDisposeScope();
            var x = latents.to(ScalarType.Float64);
            var tokens = channelsFirst ? x.flatten(2).transpose(1, 2) : x;       // [B, T, C]
            var flat = tokens.reshape(-1, tokens.shape[^1]);
            // An explicit dimension list: a bare 0 binds to the sum(ScalarType) overload and sums everything.
            var s = flat.sum(new long[] { 0 });
            var sq = (flat * flat).sum(new long[] { 0 });
            // Owned by the accumulator, not by any dispose scope of the caller's loop.
            _sum = _sum is null ? s.DetachFromDisposeScope() : _sum.add_(s);
            _sumSq = _sumSq is null ? sq.DetachFromDisposeScope() : _sumSq.add_(sq);
            _count += flat.shape[0];
        }

        public LatentStatistics Result()
        {
            if (_sum is null || _count < 2) throw new SvgdException("latent statistics need at least two latent tokens");
            using var scope = torch.NewDisposeScope();
            var mean = _sum / _count;
            var variance = ((_sumSq! - _sum * mean) / (_count - 1)).clamp_min(0);
            return new LatentStatistics(mean, variance.sqrt().clamp_min(1e-8));
        }
    }

    /// <summary>[B, C, h, w] latents -> normalised, same layout.</summary>
    public Tensor Normalize(Tensor latents) => Apply(latents, forward: true);
    public Tensor Denormalize(Tensor latents) => Apply(latents, forward: false);

    Tensor Apply(Tensor x, bool forward)
    {
        if (x.shape[1] != Channels && x.shape[^1] != Channels)
            throw new SvgdException($"latent has {x.shape[1]} channels but the statistics have {Channels}");
        using var scope = torch.NewDisposeScope();
        bool channelsFirst = x.dim() == 4;
        var mean = (channelsFirst ? Mean.view(1, -1, 1, 1) : Mean).to(x.dtype, x.device);
        var std = (channelsFirst ? Std.view(1, -1, 1, 1) : Std).to(x.dtype, x.device);
        return (forward ? (x - mean) / std : x * std + mean).MoveToOuterDisposeScope();
    }

    public void Dispose() { Mean.Dispose(); Std.Dispose(); }
}
