using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training.Lean;

// The classes keep TorchSharp's names: an optimiser's state is saved under its type's name and loaded only
// into a type of that name, so runs checkpointed with TorchSharp's optimisers resume with these, and back.

/// <summary>
/// TorchSharp's <c>AdamW</c> with the same state, checkpoint format (and type name) and arithmetic (op for op, so bit for bit),
/// whose step frees each parameter's temporaries before the next parameter. TorchSharp's own step holds one
/// dispose scope over all parameters, so the <c>sqrt(v) / sqrt(1 - β2^t)</c> temporaries of every parameter
/// live until the step ends: twice the fp32 weights (5.4 GB for SVG-XL) on top of weights, gradients and
/// moments. Here the extra is the largest parameter's.
/// </summary>
public sealed class AdamW : TorchSharp.Modules.AdamW
{
    public AdamW(IEnumerable<Parameter> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0)
        : base(parameters, lr, beta1, beta2, eps, weight_decay)
    {
    }

    public AdamW(IEnumerable<ParamGroup> groups, double lr)
        : base(groups, lr)
    {
    }

    public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
    {
        var options = (Options)group.Options;
        double beta1 = options.beta1!.Value, beta2 = options.beta2!.Value, weightDecay = options.weight_decay!.Value, eps = options.eps!.Value, lr = options.LearningRate!.Value;
        bool amsgrad = options.amsgrad!.Value, maximize = options.maximize!.Value;
        foreach (var param in group.Parameters)
        {
            using var scope = torch.NewDisposeScope();
            var state = (State)_state[param.Handle];
            if (param.grad is not { } g) continue;
            var grad = maximize ? -g : g;
            state.step += 1;
            param.mul_(1 - lr * weightDecay);
            double biasCorrection1 = 1 - Math.Pow(beta1, state.step);
            double biasCorrection2 = 1 - Math.Pow(beta2, state.step);
            state.exp_avg.mul_(beta1).add_(grad, alpha: 1 - beta1);
            state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
            param.addcdiv_(state.exp_avg, Denominator(state.exp_avg_sq, ref state.max_exp_avg_sq, amsgrad, biasCorrection2, eps, _scratch), value: -(lr / biasCorrection1));
        }
    }, closure);

    readonly Scratch _scratch = new();

    protected override void Dispose(bool disposing)
    {
        if (disposing) _scratch.Dispose();
        base.Dispose(disposing);
    }

    /// <summary><c>(sqrt(v) / sqrt(1 - β2^t)) + eps</c>, as TorchSharp computes it, in <paramref name="scratch"/>'s buffer where it fits.</summary>
    internal static Tensor Denominator(Tensor expAvgSq, ref Tensor maxExpAvgSq, bool amsgrad, double biasCorrection2, double eps, Scratch scratch)
    {
        if (amsgrad)
        {
            var old = maxExpAvgSq;
            maxExpAvgSq = torch.maximum(old, expAvgSq).DetachFromDisposeScope();
            old.Dispose();
            expAvgSq = maxExpAvgSq;
        }
        // The same three element-wise ops, in place on a copy: bit for bit the values of sqrt(), / and add_.
        if (scratch.Like(expAvgSq) is Tensor d) return d.copy_(expAvgSq).sqrt_().div_(Math.Sqrt(biasCorrection2)).add_(eps);
        return (expAvgSq.sqrt() / Math.Sqrt(biasCorrection2)).add_(eps);
    }
}

/// <summary>
/// One buffer, as large as the largest tensor asked for, lent out as a view shaped like each: a step's per-parameter
/// temporaries then reuse one allocation instead of allocating (and freeing) the model's size in pieces every step,
/// which the heap does not always reuse (its free space grew by a GiB a step on SVG-XL).
/// </summary>
public sealed class Scratch : IDisposable
{
    Tensor? _buffer;

    /// <summary>A contiguous tensor of <paramref name="like"/>'s shape, dtype and device over the buffer (grown as needed); null for tensors
    /// that are not contiguous (whose copies would keep their strides).</summary>
    public Tensor? Like(Tensor like, ScalarType? dtype = null)
    {
        if (!like.is_contiguous()) return null;
        var type = dtype ?? like.dtype;
        if (_buffer is null || _buffer.dtype != type || _buffer.device != like.device || _buffer.numel() < like.numel())
        {
            long size = Math.Max(like.numel(), _buffer is not null && _buffer.dtype == type ? _buffer.numel() : 0);
            _buffer?.Dispose();
            _buffer = torch.empty(size, dtype: type, device: like.device).DetachFromDisposeScope();
        }
        return _buffer.narrow(0, 0, like.numel()).view(like.shape);
    }

    public void Dispose()
    {
        _buffer?.Dispose();
        _buffer = null;
    }
}

/// <summary>TorchSharp's <c>Adam</c>, bit for bit, with each parameter's temporaries freed before the next (see <see cref="AdamW"/>).</summary>
public sealed class Adam : TorchSharp.Modules.Adam
{
    public Adam(IEnumerable<Parameter> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weight_decay = 0)
        : base(parameters, lr, beta1, beta2, eps, weight_decay)
    {
    }

    public override Tensor step(Func<Tensor>? closure = null) => _step<ParamGroup>(group =>
    {
        var options = (Options)group.Options;
        double beta1 = options.beta1!.Value, beta2 = options.beta2!.Value, weightDecay = options.weight_decay!.Value, eps = options.eps!.Value, lr = options.LearningRate!.Value;
        bool amsgrad = options.amsgrad!.Value, maximize = options.maximize!.Value;
        foreach (var param in group.Parameters)
        {
            using var scope = torch.NewDisposeScope();
            var state = (State)_state[param.Handle];
            if (param.grad is not { } g) continue;
            var grad = maximize ? -g : g;
            state.step += 1;
            double biasCorrection1 = 1 - Math.Pow(beta1, state.step);
            double biasCorrection2 = 1 - Math.Pow(beta2, state.step);
            if (weightDecay != 0) grad = grad.add(param, alpha: weightDecay);
            state.exp_avg.mul_(beta1).add_(grad, alpha: 1 - beta1);
            state.exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value: 1 - beta2);
            param.addcdiv_(state.exp_avg, AdamW.Denominator(state.exp_avg_sq, ref state.max_exp_avg_sq, amsgrad, biasCorrection2, eps, _scratch), value: -(lr / biasCorrection1));
        }
    }, closure);

    readonly Scratch _scratch = new();

    protected override void Dispose(bool disposing)
    {
        if (disposing) _scratch.Dispose();
        base.Dispose(disposing);
    }
}
