using SvgDiffusion.Models.Common;
using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// A transformer block with adaLN-Zero conditioning: the condition c (time + label embedding) sets a
/// shift, scale and gate for both the attention and the MLP branch. The gates start at zero, so a new
/// block begins as the identity, which is what makes deep DiTs trainable from scratch.
/// </summary>
public sealed class DiTBlock : nn.Module
{
    internal const double NormEps = 1e-6;

    readonly LayerNorm norm1, norm2;
    readonly Attention attn;
    readonly FeedForward mlp;
    readonly Sequential adaLN_modulation;

    public DiTBlock(string name, DiTConfig cfg) : base(name)
    {
        int d = cfg.HiddenSize;
        // No affine: the modulation supplies the per-channel scale and shift.
        norm1 = LayerNorm(d, NormEps, elementwise_affine: false);
        attn = new Attention(d, cfg.NumHeads, cfg.QkNorm);
        norm2 = LayerNorm(d, NormEps, elementwise_affine: false);
        mlp = new FeedForward(d, cfg.MlpHidden);
        adaLN_modulation = Sequential(("0", SiLU()), ("1", new PackedLinear(d, 6 * d)));
        RegisterComponents();
    }

    internal IEnumerable<PackedLinear> Linears => attn.Linears.Concat(mlp.Linears);
    internal PackedLinear Modulation => (PackedLinear)adaLN_modulation.children().Last();

    /// <summary>x * (1 + scale) + shift, with [B, C] modulations broadcast over the tokens.</summary>
    internal static Tensor Modulate(Tensor x, Tensor shift, Tensor scale) =>
        x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);

    /// <summary>LayerNorm statistics in fp32 for bf16 tokens: a mean and variance over 1,000+ channels in bf16 lose most of their digits.</summary>
    internal static Tensor Norm(LayerNorm norm, Tensor x) =>
        x.dtype is ScalarType.BFloat16 or ScalarType.Float16 ? norm.forward(x.to(ScalarType.Float32)).to(x.dtype) : norm.forward(x);

    /// <summary>LayerNorm then <see cref="Modulate"/>: one fused pass when autograd is off (<see cref="FusedOps"/>).</summary>
    internal static Tensor NormModulate(LayerNorm norm, Tensor x, Tensor shift, Tensor scale) =>
        FusedOps.Applies(x, shift, scale) && x.dim() == 3
            ? FusedOps.ModulatedLayerNorm(x, shift, scale, NormEps)
            : Modulate(Norm(norm, x), shift, scale);

    /// <summary>The block's operands for <see cref="Bf16DiTBlock"/> where every linear runs on the bf16 GEMM; null elsewhere.</summary>
    Bf16DiTBlockWeights? NativeWeights()
    {
        if (attn.Qkv.InferenceBf16Weight() is not { } qkv || attn.Proj.InferenceBf16Weight() is not { } proj
            || mlp.Fc1.InferenceBf16Weight() is not { } fc1 || mlp.Fc2.InferenceBf16Weight() is not { } fc2) return null;
        var norms = attn.QkNorms;
        if (norms is { } n && (n.Q.Eps != n.K.Eps || n.Q.Weight.dtype != ScalarType.BFloat16 || n.K.Weight.dtype != ScalarType.BFloat16)) return null;
        return new Bf16DiTBlockWeights(attn.Heads, NormEps, norms?.Q.Eps ?? 0, qkv, attn.Qkv.bias, proj, attn.Proj.bias, fc1, mlp.Fc1.bias, fc2, mlp.Fc2.bias,
            norms?.Q.Weight, norms?.Q.Bias, norms?.K.Weight, norms?.K.Bias);
    }

    /// <param name="x">[B, N, C] tokens.</param>
    /// <param name="c">[B, C] condition.</param>
    public Tensor Forward(Tensor x, Tensor c)
    {
        using var scope = torch.NewDisposeScope();
        if (Bf16DiTBlock.Applies(x, attn.Heads) && NativeWeights() is { } w)
        {
            using var modulation = adaLN_modulation.forward(c);
            if (modulation.dtype == ScalarType.BFloat16 && modulation.dim() == 2)
            {
                using var mc = modulation.contiguous();
                return Bf16DiTBlock.Forward(x, mc, w).MoveToOuterDisposeScope();
            }
        }
        var m = adaLN_modulation.forward(c).chunk(6, dim: 1);
        // Order as in DiT: shift, scale, gate for attention, then for the MLP.
        var a = attn.forward(NormModulate(norm1, x, m[0], m[1]));
        if (FusedOps.Applies(x, m[2], a))
        {
            // The first sum is a new tensor (the caller's x is left alone); the second adds into it.
            x = FusedOps.GatedResidual(x, m[2], a, inPlace: false);
            using var f = mlp.forward(NormModulate(norm2, x, m[3], m[4]));
            FusedOps.GatedResidual(x, m[5], f, inPlace: true);
            return x.MoveToOuterDisposeScope();
        }
        x = x + m[2].unsqueeze(1) * a;
        x = x + m[5].unsqueeze(1) * mlp.forward(Modulate(Norm(norm2, x), m[3], m[4]));
        return x.MoveToOuterDisposeScope();
    }
}
