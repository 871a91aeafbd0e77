using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Embeds the flow time t in [0, 1] (0 = noise, 1 = data): sinusoidal features then an MLP
/// (<c>mlp.0</c>, SiLU, <c>mlp.2</c>), as in DiT/SiT.
/// </summary>
public sealed class TimestepEmbedder : Module<Tensor, Tensor>
{
    public const int FrequencyEmbeddingSize = 256;
    const double MaxPeriod = 10000.0;

    readonly Sequential mlp;

    public TimestepEmbedder(int hidden) : base("t_embedder")
    {
        mlp = Sequential(("0", new PackedLinear(FrequencyEmbeddingSize, hidden)), ("1", SiLU()), ("2", new PackedLinear(hidden, hidden)));
        RegisterComponents();
    }

    internal IEnumerable<PackedLinear> Linears => mlp.children().OfType<PackedLinear>();

    /// <summary>
    /// [B, dim] features: cosines then sines of t * 10000^(-i/(dim/2)). t is used as given, not scaled to
    /// DiT's 0..1000 range: SiT-style models are trained on the continuous flow time itself.
    /// Operation order follows the reference so float32 rounding is the same.
    /// </summary>
    public static Tensor Frequencies(Tensor t, int dim = FrequencyEmbeddingSize)
    {
        using var scope = torch.NewDisposeScope();
        int half = dim / 2;
        var freqs = torch.exp(-Math.Log(MaxPeriod) * torch.arange(0, half, dtype: ScalarType.Float32, device: t.device) / half);
        var args = t.to(ScalarType.Float32).unsqueeze(1) * freqs.unsqueeze(0);
        var emb = torch.cat(new[] { torch.cos(args), torch.sin(args) }, dim: -1);
        if (dim % 2 == 1) emb = torch.cat(new[] { emb, torch.zeros_like(emb.narrow(1, 0, 1)) }, dim: -1);
        return emb.MoveToOuterDisposeScope();
    }

    /// <param name="t">[B] flow times.</param>
    public override Tensor forward(Tensor t)
    {
        using var scope = torch.NewDisposeScope();
        var f = Frequencies(t);
        var w = mlp.children().OfType<PackedLinear>().First().weight!;
        return mlp.forward(f.to(w.dtype)).MoveToOuterDisposeScope();
    }
}
