using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>
/// The velocity a sampler follows: the model's conditional velocity, with classifier-free guidance
/// applied per <see cref="GuidanceSchedule"/>. Conditional and unconditional velocities come from one
/// forward pass over the batch doubled (labels, then null labels), which costs one large batch instead of
/// two small ones.
/// </summary>
public sealed class GuidedVelocity
{
    readonly VelocityField _model;
    readonly Tensor _cond;
    readonly Tensor? _null;
    public GuidanceSchedule Guidance { get; }
    /// <summary>Whether guidance applies (w != 1 and null labels given).</summary>
    public bool Active { get; }
    /// <summary>Model evaluations so far; a guided one counts once although its batch is doubled.</summary>
    public int Evaluations { get; private set; }

    public GuidedVelocity(VelocityField model, Tensor cond, Tensor? nullLabels, GuidanceSchedule? guidance)
    {
        if (cond.dim() != 1) throw new SvgdException($"labels must be [B], got {Checkpoint.Shape(cond.shape)}");
        if (nullLabels is not null && !nullLabels.shape.SequenceEqual(cond.shape))
            throw new SvgdException($"null labels {Checkpoint.Shape(nullLabels.shape)} must match the labels {Checkpoint.Shape(cond.shape)}");
        _model = model;
        _cond = cond;
        _null = nullLabels;
        Guidance = guidance ?? GuidanceSchedule.None;
        Active = Guidance.IsActive(nullLabels is not null);
    }

    /// <summary>Whether step <paramref name="step"/> moves with -r v_u (cfg_star) instead of the guided velocity.</summary>
    public bool Overrides(int step) => Active && Guidance.OverridesStep(step);

    /// <summary>The (guided) velocity at x [B, ...] and flow time t, for step <paramref name="step"/>.</summary>
    public Tensor At(Tensor x, float t, int step)
    {
        if (x.shape[0] != _cond.shape[0])
            throw new SvgdException($"the sample batch {x.shape[0]} does not match the {_cond.shape[0]} labels");
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0];
        var tb = torch.full(b, t, dtype: ScalarType.Float32, device: x.device);
        if (!Active) return Eval(x, tb, _cond).MoveToOuterDisposeScope();
        if (Guidance.OverridesStep(step))
        {
            // Zero-init needs no model evaluation at all.
            if (Guidance.OverrideFactor == 0) return torch.zeros_like(x).MoveToOuterDisposeScope();
            return (-Guidance.OverrideFactor * Eval(x, tb, _null!)).MoveToOuterDisposeScope();
        }
        double w = Guidance.WeightAt(t);
        if (w == 1.0) return Eval(x, tb, _cond).MoveToOuterDisposeScope();
        var both = Eval(torch.cat(new[] { x, x }, 0), torch.cat(new[] { tb, tb }, 0), torch.cat(new[] { _cond, _null! }, 0));
        var parts = both.chunk(2, dim: 0);
        var (vc, vu) = (parts[0], parts[1]);
        return (vu + w * (vc - vu)).MoveToOuterDisposeScope();
    }

    Tensor Eval(Tensor x, Tensor t, Tensor y)
    {
        Evaluations++;
        var v = _model(x, t, y.to(x.device));
        if (!v.shape.SequenceEqual(x.shape))
            throw new SvgdException($"the model's velocity {Checkpoint.Shape(v.shape)} does not match its input {Checkpoint.Shape(x.shape)}");
        return v;
    }
}
