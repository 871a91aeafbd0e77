using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation.Probes;

/// <summary>One epoch of probe training: the mean training loss and the learning rate at its end.</summary>
public sealed record ProbeEpoch(int Epoch, double Loss, double LearningRate);

/// <summary>
/// The learning-rate schedule of the MAE / DINO linear-probe recipes: linear warmup over
/// <c>warmupEpochs</c>, then a half-cosine from the base rate to <c>minLr</c>, evaluated per
/// iteration at a fractional epoch (epoch + iteration / iterations per epoch).
/// </summary>
public static class ProbeSchedule
{
    public static double LearningRate(double epoch, int epochs, int warmupEpochs, double lr, double minLr = 0)
    {
        if (epoch < warmupEpochs) return lr * epoch / warmupEpochs;
        double span = epochs - warmupEpochs;
        double t = span <= 0 ? 1.0 : Math.Clamp((epoch - warmupEpochs) / span, 0.0, 1.0);
        return minLr + (lr - minLr) * 0.5 * (1.0 + Math.Cos(Math.PI * t));
    }

    /// <summary>
    /// Mini-batch index lists of one epoch: a permutation drawn from <paramref name="generator"/> cut into
    /// slices of <paramref name="batchSize"/>. A final slice of one sample is merged into the one before,
    /// since batch norm cannot train on a single sample.
    /// </summary>
    internal static List<Tensor> Batches(long n, int batchSize, Generator generator)
    {
        var perm = torch.randperm(n, generator: generator);
        var result = new List<Tensor>();
        for (long start = 0; start < n; start += batchSize)
        {
            long len = Math.Min(batchSize, n - start);
            if (n - start - len == 1) len += 1;
            result.Add(perm.narrow(0, start, len));
            if (len > batchSize) break;
        }
        perm.Dispose();
        return result;
    }

    internal static void SetLearningRate(OptimizerHelper optimizer, double lr)
    {
        foreach (var g in optimizer.ParamGroups) g.LearningRate = lr;
    }

    /// <summary>AdamW with weight decay on the weights only (biases and norm parameters are not decayed).</summary>
    internal static AdamW AdamW(IEnumerable<(string Name, Parameter P)> parameters, double lr, double weightDecay)
    {
        var list = parameters.Where(p => p.P.requires_grad).ToList();
        var decay = list.Where(p => p.P.dim() >= 2).Select(p => p.P).ToList();
        var noDecay = list.Where(p => p.P.dim() < 2).Select(p => p.P).ToList();
        var groups = new List<AdamW.ParamGroup>
        {
            new(decay, lr: lr, weight_decay: weightDecay),
        };
        if (noDecay.Count > 0) groups.Add(new AdamW.ParamGroup(noDecay, lr: lr, weight_decay: 0.0));
        return new Training.Lean.AdamW(groups, lr);
    }

    /// <summary>
    /// The training loop both probes share: per epoch a seeded permutation cut into mini-batches, the
    /// warmup-cosine rate set per iteration, AdamW (weights decayed, biases not). <paramref name="lossOf"/>
    /// maps a batch's sample indices to its loss; a NaN loss (a batch with nothing to learn from) is left
    /// out of the epoch mean.
    /// </summary>
    internal static List<ProbeEpoch> Train(nn.Module probe, long n, int epochs, int batchSize, int warmupEpochs,
        double lr, double minLr, double weightDecay, long seed, Func<Tensor, Tensor> lossOf, Action<ProbeEpoch>? onEpoch)
    {
        using var opt = AdamW(probe.named_parameters(), lr, weightDecay);
        var history = new List<ProbeEpoch>();
        probe.train();
        double current = 0;
        for (int epoch = 0; epoch < epochs; epoch++)
        {
            using var generator = Training.RunCheckpoint.StepGenerator(seed, epoch, stream: 1);
            var batches = Batches(n, batchSize, generator);
            double sum = 0;
            for (int it = 0; it < batches.Count; it++)
            {
                using var scope = torch.NewDisposeScope();
                current = LearningRate(epoch + (double)it / batches.Count, epochs, warmupEpochs, lr, minLr);
                SetLearningRate(opt, current);
                var loss = lossOf(batches[it]);
                opt.zero_grad();
                loss.backward();
                opt.step();
                double l = loss.item<float>();
                if (!double.IsNaN(l)) sum += l * batches[it].shape[0];
            }
            foreach (var b in batches) b.Dispose();
            var e = new ProbeEpoch(epoch + 1, sum / n, current);
            history.Add(e);
            onEpoch?.Invoke(e);
        }
        probe.eval();
        return history;
    }
}
