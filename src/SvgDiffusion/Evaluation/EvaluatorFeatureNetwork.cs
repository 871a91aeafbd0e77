using SvgDiffusion.Models.Evaluator;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// The evaluation classifier as a feature network: its pooled features for Fréchet distances
/// (labelled FD-evaluator, never FID) and its logits for class accuracy and the Inception-Score formula.
/// </summary>
public sealed class EvaluatorFeatureNetwork(EvaluatorNet net, IReadOnlyList<string>? classNames = null) : IFeatureNetwork
{
    public string Label => "FD-evaluator";
    public int Dim => net.Config.FeatureDim;
    public EvaluatorNet Net => net;
    public IReadOnlyList<string>? ClassNames => classNames;

    public static EvaluatorFeatureNetwork Load(string? path = null)
    {
        var (model, names, _) = EvaluatorCheckpoint.Load(path ?? EvaluatorCheckpoint.BundledPath);
        return new EvaluatorFeatureNetwork(model, names);
    }

    /// <summary>[B, 3, H, W] in [0, 1], resized (bilinear, antialiased) to the evaluator's size when they differ.</summary>
    public Tensor Features(Tensor images01)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        net.eval();
        var x = images01.to(ScalarType.Float32) * 2 - 1;
        int s = net.Config.ImageSize;
        if (x.shape[2] != s || x.shape[3] != s)
            x = nn.functional.interpolate(x, new long[] { s, s }, mode: InterpolationMode.Bilinear, align_corners: false, antialias: true);
        return net.Features(x).MoveToOuterDisposeScope();
    }

    public Tensor? Logits(Tensor features)
    {
        using var _ = torch.inference_mode();
        net.eval();
        return net.Logits(features);
    }

    public void Dispose() => net.Dispose();
}
