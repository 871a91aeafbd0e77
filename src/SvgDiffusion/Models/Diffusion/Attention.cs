using SvgDiffusion.Models.Common;
using SvgDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Multi-head self-attention in timm's layout (<c>qkv</c> with bias, <c>proj</c>) with optional LayerNorm
/// of queries and keys over each head's channels (<c>q_norm</c>, <c>k_norm</c>, affine, eps 1e-5).
/// Normalising q and k bounds the attention logits, which the SVG models rely on for stable training.
/// </summary>
public sealed class Attention : Module<Tensor, Tensor>
{
    readonly int _heads;
    readonly PackedLinear qkv, proj;
    readonly Module<Tensor, Tensor> q_norm, k_norm;

    public Attention(int dim, int heads, bool qkNorm) : base("attn")
    {
        _heads = heads;
        qkv = new PackedLinear(dim, dim * 3, hasBias: true);
        // Identity has no weights, so without qk-norm the state dict has no q_norm/k_norm keys, as in timm.
        // PrecisionLayerNorm: in bf16 the per-head statistics are taken in fp32 (same keys as LayerNorm).
        q_norm = qkNorm ? new PrecisionLayerNorm(dim / heads, 1e-5, "q_norm") : Identity();
        k_norm = qkNorm ? new PrecisionLayerNorm(dim / heads, 1e-5, "k_norm") : Identity();
        proj = new PackedLinear(dim, dim);
        RegisterComponents();
    }

    internal IEnumerable<PackedLinear> Linears => new[] { qkv, proj };
    internal int Heads => _heads;
    internal PackedLinear Qkv => qkv;
    internal PackedLinear Proj => proj;
    /// <summary>The q and k norms, or null without qk-norm.</summary>
    internal (PrecisionLayerNorm Q, PrecisionLayerNorm K)? QkNorms => q_norm is PrecisionLayerNorm q && k_norm is PrecisionLayerNorm k ? (q, k) : null;

    /// <summary>Sequences up to this long take <see cref="AttendShort"/> in bf16 inference.</summary>
    internal const int ShortSequence = 32;

    static bool ShortBf16(Tensor q, Tensor k, Tensor v) =>
        q.shape[2] <= ShortSequence && q.dtype == ScalarType.BFloat16 && FusedOps.Applies(q, k, v);

    /// <summary>
    /// Attention as two batched GEMMs and an fp32 softmax. For short sequences (the bundled model's 4x4
    /// grid: 16 tokens) libtorch's flash-attention kernel costs several times its arithmetic: at 160
    /// sequences x 4 heads, bf16, 0.8-0.95 ms against 2.9-3.6 ms per layer for 16 tokens, 1.2 against 2.6
    /// for 32; at 64 tokens it is the other way round (21 against 3.5). The scores leave the bf16 GEMM
    /// rounded to bf16, as q and k already are; the softmax runs in fp32.
    /// </summary>
    static Tensor AttendShort(Tensor q, Tensor k, Tensor v)
    {
        using var scope = torch.NewDisposeScope();
        var scores = torch.matmul(q, k.transpose(-2, -1)).to(ScalarType.Float32).mul_(1.0 / Math.Sqrt(q.shape[^1]));
        var p = torch.softmax(scores, -1).to(q.dtype);
        return torch.matmul(p, v).MoveToOuterDisposeScope();
    }

    /// <param name="x">[B, N, C].</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        var y = qkv.forward(x);
        // With autograd off, q and k are normalised in place inside the qkv output (no copies to contiguous).
        bool fused = false;
        if (q_norm is PrecisionLayerNorm qn && k_norm is PrecisionLayerNorm kn && y.is_contiguous() && FusedOps.Applies(y, qn.Weight, qn.Bias, kn.Weight, kn.Bias))
        {
            FusedOps.HeadNorm_(y, _heads, qn.Weight, qn.Bias, kn.Weight, kn.Bias, qn.Eps);
            fused = true;
        }
        // In bf16 inference the whole attention reads the qkv output in place and writes proj's input.
        if ((fused || q_norm is not PrecisionLayerNorm) && Bf16Attention.Applies(y, _heads))
            return proj.forward(Bf16Attention.Attend(y, _heads)).MoveToOuterDisposeScope();
        var parts = y.reshape(b, n, 3, _heads, c / _heads).permute(2, 0, 3, 1, 4).unbind(0);
        var q = fused ? parts[0] : q_norm.forward(parts[0]);
        var k = fused ? parts[1] : k_norm.forward(parts[1]);
        // libtorch's CPU attention kernel accumulates bf16 scores and the softmax in fp32 (opmath), so the softmax stays fp32.
        var o = ShortBf16(q, k, parts[2]) ? AttendShort(q, k, parts[2]) : functional.scaled_dot_product_attention(q, k, parts[2]);
        return proj.forward(o.transpose(1, 2).reshape(b, n, c)).MoveToOuterDisposeScope();
    }
}
