using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

/// <summary>One edit's measures: shape kept (foreground IoU with the source, cosine of the frozen features) and colour moved (to the target variant).</summary>
public sealed record RecolorMeasure(string Family, string Method, double Strength, string Source, string Target,
    double IoU, double SemanticCosine, double HueDistance, double SourceHueDistance, double ColourDistance, double SourceColourDistance)
{
    /// <summary>The edit's mean foreground colour is nearer the target's than the source's is.</summary>
    public bool ColourMoved => ColourDistance < SourceColourDistance;
}

/// <summary>Means over a family (or all pairs) for one method and strength.</summary>
public sealed record RecolorSummary(string Family, string Method, double Strength, int Pairs, double IoU, double SemanticCosine,
    double HueDistance, double SourceHueDistance, double ColourMovedFraction);

/// <summary>
/// Measures recolouring on colour families (<see cref="ColourFamilies"/>): for each pair (source, target
/// variant of the same shape) the source is recoloured <c>--like</c> the target by SVG's channel inpainting
/// (<see cref="GenerationService.Recolor"/>), and by three baselines: <c>mix</c> (the source's semantic channels
/// with the target's residual channels, decoded: no DiT), SDEdit of that mixed latent with every channel free
/// (the same start and schedule as recolour without holding the semantic channels) and <c>vary</c> (SDEdit of
/// the source alone, which can change colour only at random). The strengths sweep gives the shape kept at a
/// matched colour change.
/// </summary>
public sealed class RecolorEvaluation(GenerationService service, (byte R, byte G, byte B) background)
{
    public const string Recolor = "recolor", Mix = "mix", MixSdedit = "sdedit-of-mix", Vary = "vary";

    (double, double, double) Bg01 => (background.R / 255.0, background.G / 255.0, background.B / 255.0);

    public IReadOnlyList<RecolorMeasure> Run(IReadOnlyList<ColourPair> pairs, IReadOnlyList<double> strengths, GenerationPlan plan, Action<int>? progress = null,
        Action<ColourPair, IReadOnlyList<(string Method, double Strength, Tensor Image)>>? onEdits = null)
    {
        var editor = service.Editor ?? throw new SvgdException("recolour evaluation needs an SVG autoencoder");
        var results = new List<RecolorMeasure>();
        foreach (var pair in pairs)
        {
            using var scope = torch.NewDisposeScope();
            var src = ImageFiles.ToRgb(ImageFiles.LoadRgba(pair.Source), background);
            var tgt = ImageFiles.ToRgb(ImageFiles.LoadRgba(pair.Target), background);
            var inputs = (editor.Prepare(new[] { src, tgt }) + 1) / 2;
            var edits = new List<(string, double, Tensor)> { (Mix, 0, (editor.Mix(src, tgt)[0] + 1) / 2) };
            foreach (double s in strengths)
            {
                using (var r = service.Recolor(src, tgt, s, plan)) edits.Add((Recolor, s, ((r.Images![0] + 1) / 2).MoveToOuterDisposeScope()));
                using (var r = service.Recolor(src, tgt, s, plan, holdSemantic: false)) edits.Add((MixSdedit, s, ((r.Images![0] + 1) / 2).MoveToOuterDisposeScope()));
                using (var r = service.Vary(src, s, plan)) edits.Add((Vary, s, ((r.Images![0] + 1) / 2).MoveToOuterDisposeScope()));
            }
            var semantic = editor.SemanticChannels;
            var encodedEdits = editor.Encode(torch.stack(edits.Select(e => e.Item3 * 2 - 1).ToArray()));
            var encodedSource = editor.Encode(inputs.narrow(0, 0, 1) * 2 - 1);
            var fSrc = encodedSource.narrow(1, 0, semantic).mean(new long[] { 2, 3 });
            var fEdit = encodedEdits.narrow(1, 0, semantic).mean(new long[] { 2, 3 });
            var cos = nn.functional.cosine_similarity(fEdit, fSrc.expand_as(fEdit), 1).data<float>().ToArray();
            var targetHist = ShapeAndColour.HueHistogram(inputs[1], Bg01);
            var targetColour = ShapeAndColour.MeanColour(inputs[1], Bg01);
            double srcHue = ShapeAndColour.Distance(ShapeAndColour.HueHistogram(inputs[0], Bg01), targetHist);
            double srcColour = ShapeAndColour.ColourDistance(ShapeAndColour.MeanColour(inputs[0], Bg01), targetColour);
            for (int i = 0; i < edits.Count; i++)
            {
                var (method, s, image) = edits[i];
                results.Add(new RecolorMeasure(pair.Family, method, s, pair.SourceName, pair.TargetName,
                    ShapeAndColour.ForegroundIoU(inputs[0], image, Bg01), cos[i],
                    ShapeAndColour.Distance(ShapeAndColour.HueHistogram(image, Bg01), targetHist), srcHue,
                    ShapeAndColour.ColourDistance(ShapeAndColour.MeanColour(image, Bg01), targetColour), srcColour));
            }
            onEdits?.Invoke(pair, new[] { ("source", 0.0, inputs[0]), ("target", 0.0, inputs[1]) }.Concat(edits).ToList());
            progress?.Invoke(1);
        }
        return results;
    }

    /// <summary>Means by family and method/strength, then over all pairs (family "all").</summary>
    public static IReadOnlyList<RecolorSummary> Summarise(IReadOnlyList<RecolorMeasure> measures) =>
        measures.GroupBy(m => (m.Family, m.Method, m.Strength))
            .Concat(measures.GroupBy(m => ("all", m.Method, m.Strength)))
            .Select(g => new RecolorSummary(g.Key.Item1, g.Key.Method, g.Key.Strength, g.Count(), g.Average(m => m.IoU), g.Average(m => m.SemanticCosine),
                g.Average(m => m.HueDistance), g.Average(m => m.SourceHueDistance), g.Average(m => m.ColourMoved ? 1.0 : 0.0)))
            .ToList();
}
