using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>Mean and (population) standard deviation of the per-split scores.</summary>
public readonly record struct InceptionScoreResult(double Mean, double Std, IReadOnlyList<double> SplitScores);

/// <summary>
/// Inception Score, exp(E_x KL(p(y|x) ‖ p(y))), following the original TensorFlow code (Salimans et al.)
/// that the ADM evaluator and torch-fidelity reproduce: p(y|x) is the softmax over all 1008 outputs of
/// pool3·Wᵀ (the classifier without its bias: <see cref="FidInceptionV3.Logits"/> with
/// <c>includeBias: false</c>); the samples are cut into <c>splits</c> consecutive parts at
/// ⌊i·N/splits⌋, p(y) is each part's mean prediction, and the result is the mean and numpy-style
/// (ddof 0) standard deviation of the parts' scores. Computed in float64.
/// </summary>
public static class InceptionScore
{
    public const int DefaultSplits = 10;

    /// <param name="logits">[N, C] logits, C = 1008 for the FID Inception.</param>
    public static InceptionScoreResult FromLogits(Tensor logits, int splits = DefaultSplits)
    {
        if (logits.dim() != 2) throw new SvgdException($"Inception Score: logits must be [N, classes], got {Checkpoints.Checkpoint.Shape(logits.shape)}");
        long n = logits.shape[0];
        if (splits < 1) throw new SvgdException($"Inception Score: splits must be at least 1, got {splits}");
        if (n < splits) throw new SvgdException($"Inception Score: {n} samples cannot be cut into {splits} splits");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var logp = torch.nn.functional.log_softmax(logits.detach().cpu().to(ScalarType.Float64), 1);
        var p = logp.exp();
        var scores = new List<double>();
        for (int i = 0; i < splits; i++)
        {
            long start = i * n / splits, end = (i + 1) * n / splits;
            var part = p.narrow(0, start, end - start);
            var logPart = logp.narrow(0, start, end - start);
            var logMarginal = part.mean(new long[] { 0 }, keepdim: true).log();
            var terms = part * (logPart - logMarginal);
            var kl = torch.where(part > 0, terms, torch.zeros_like(terms)).sum(1).mean(); // 0·log 0 = 0
            scores.Add(Math.Exp(kl.item<double>()));
        }
        double mean = scores.Average();
        double std = Math.Sqrt(scores.Sum(s => (s - mean) * (s - mean)) / scores.Count);
        return new InceptionScoreResult(mean, std, scores);
    }

    /// <summary>Probabilities [N, C] instead of logits (e.g. softmax outputs stored by another tool).</summary>
    public static InceptionScoreResult FromProbabilities(Tensor probabilities, int splits = DefaultSplits)
    {
        using var logp = probabilities.to(ScalarType.Float64).log();
        return FromLogits(logp, splits);
    }
}
