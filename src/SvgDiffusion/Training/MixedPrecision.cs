using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

/// <summary>
/// Mixed-precision training with fp32 master weights: the optimiser, its state, the EMA and every
/// checkpoint see only the fp32 <c>master</c> module; forward and backward run on a <c>compute</c> copy of
/// the same architecture whose heavy layers hold bf16 weights (which ones is the model's own choice, e.g.
/// <see cref="Models.Diffusion.DiT.SetComputePrecision"/>: norms' statistics, the timestep embedding and
/// the final layer stay fp32). Each step the master weights are rounded into the copy, and the copy's
/// gradients are widened into the master's <c>.grad</c>: the same arithmetic as per-op autocast (bf16
/// GEMMs, fp32 accumulation inside them, fp32 weight update), without casting every weight at every use.
/// bf16 has fp32's exponent range, so no loss scaling is needed.
/// </summary>
public sealed class MixedPrecision
{
    readonly List<(Parameter Master, Parameter Compute)> _pairs = new();

    public MixedPrecision(nn.Module master, nn.Module compute)
    {
        var byName = compute.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in master.named_parameters())
        {
            if (!byName.TryGetValue(name, out var c) || !c.shape.SequenceEqual(p.shape))
                throw new InvalidOperationException($"mixed precision: the compute copy has no parameter '{name}' of shape [{string.Join(", ", p.shape)}]");
            c.requires_grad = p.requires_grad;
            _pairs.Add((p, c));
        }
    }

    /// <summary>Rounds the master weights into the compute copy (call before each forward).</summary>
    public void PullWeights()
    {
        using var _ = torch.no_grad();
        foreach (var (m, c) in _pairs) c.copy_(m);
    }

    /// <summary>
    /// Frees the master's gradients before a backward on the compute copy, in place of <c>zero_grad</c>:
    /// <see cref="PushGradients"/> writes all of them anew, so they need not exist (in fp32, twice the size of
    /// the copy's bf16 gradients) while the backward allocates those.
    /// </summary>
    public void DropMasterGradients()
    {
        foreach (var (m, _) in _pairs)
        {
            // The getter's wrapper is disposed here: left in the caller's dispose scope it would keep the gradient alive.
            using var g = m.grad;
            if (g is not null) m.grad = null;
        }
    }

    /// <summary>
    /// Moves the compute copy's gradients into the master's <c>.grad</c> in fp32 (replacing what was
    /// there, as after <c>zero_grad</c>) and clears the copy's.
    /// </summary>
    public void PushGradients()
    {
        using var _ = torch.no_grad();
        foreach (var (m, c) in _pairs)
        {
            if (!m.requires_grad) continue;
            using var g = c.grad;
            if (g is null) { m.grad?.zero_(); continue; }
            if (m.grad is { } mg) mg.copy_(g);
            else m.grad = g.to(m.dtype);
            // Freed here, one at a time, so the copy's and the master's gradients are never both whole.
            c.grad = null;
        }
    }
}
