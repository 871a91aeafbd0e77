using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Dinov3;

/// <summary>qkv projection whose bias is multiplied by <c>bias_mask</c>: DINOv3 trains without a key bias.</summary>
public sealed class LinearKMaskedBias : Module<Tensor, Tensor>
{
#pragma warning disable IDE0044
    Parameter weight;
    Parameter bias;
    Tensor bias_mask;
#pragma warning restore IDE0044
    readonly PackedWeightSlot _packed = new();

    public LinearKMaskedBias(int inFeatures, int outFeatures) : base("qkv")
    {
        using var init = torch.nn.Linear(inFeatures, outFeatures);
        // Detached views disposed here, not left to the GC (see PackedLinear).
        using (var w = init.weight!.detach()) weight = new Parameter(w.clone());
        using (var b = init.bias!.detach()) bias = new Parameter(b.clone());
        bias_mask = StandardMask(outFeatures);
        RegisterComponents();
    }

    /// <summary>1 for q and v, 0 for k.</summary>
    public static Tensor StandardMask(long outFeatures)
    {
        var m = torch.ones(outFeatures);
        m.narrow(0, outFeatures / 3, outFeatures / 3).fill_(0);
        return m;
    }

    public Tensor BiasMask => bias_mask;

    public override Tensor forward(Tensor x)
    {
        using var masked = bias * bias_mask.to(bias.dtype);
        return _packed.Linear(x, weight, masked);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _packed.Dispose();
        base.Dispose(disposing);
    }
}

public sealed class LayerScale : Module<Tensor, Tensor>
{
#pragma warning disable IDE0044
    Parameter gamma;
#pragma warning restore IDE0044
    public LayerScale(string name, int dim, double init) : base(name)
    {
        gamma = new Parameter(torch.full(dim, init));
        RegisterComponents();
    }
    public override Tensor forward(Tensor x) => x * gamma;
}

public sealed class Mlp : Module<Tensor, Tensor>
{
    readonly PackedLinear fc1, fc2;
    public Mlp(int dim, int hidden) : base("mlp")
    {
        fc1 = new PackedLinear(dim, hidden);
        fc2 = new PackedLinear(hidden, dim);
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        using var h = fc1.forward(x);
        using var a = functional.gelu(h);
        return fc2.forward(a);
    }
}

/// <summary>w3(silu(w1 x) * w2 x).</summary>
public sealed class SwiGluFfn : Module<Tensor, Tensor>
{
    readonly PackedLinear w1, w2, w3;
    public SwiGluFfn(int dim, int hidden) : base("mlp")
    {
        w1 = new PackedLinear(dim, hidden);
        w2 = new PackedLinear(dim, hidden);
        w3 = new PackedLinear(hidden, dim);
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = functional.silu(w1.forward(x)) * w2.forward(x);
        return w3.forward(h).MoveToOuterDisposeScope();
    }
}

public sealed class SelfAttention : nn.Module
{
    readonly int _heads;
    readonly LinearKMaskedBias qkv;
    readonly PackedLinear proj;

    public SelfAttention(int dim, int heads) : base("attn")
    {
        _heads = heads;
        qkv = new LinearKMaskedBias(dim, dim * 3);
        proj = new PackedLinear(dim, dim);
        RegisterComponents();
    }

    internal LinearKMaskedBias Qkv => qkv;

    public Tensor Forward(Tensor x, Tensor sin, Tensor cos)
    {
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], c = x.shape[2];
        var parts = qkv.forward(x).view(b, n, 3, _heads, c / _heads).unbind(2);
        var q = parts[0].transpose(1, 2);
        var k = parts[1].transpose(1, 2);
        var v = parts[2].transpose(1, 2);
        q = RopePositionEmbedding.Apply(q, sin, cos);
        k = RopePositionEmbedding.Apply(k, sin, cos);
        var o = functional.scaled_dot_product_attention(q, k, v);
        var merged = o.transpose(1, 2).reshape(b, n, c);
        return proj.forward(merged).MoveToOuterDisposeScope();
    }
}

public sealed class SelfAttentionBlock : nn.Module
{
    readonly Common.PrecisionLayerNorm norm1, norm2;
    readonly SelfAttention attn;
    readonly LayerScale ls1, ls2;
    readonly Module<Tensor, Tensor> mlp;

    public SelfAttentionBlock(Dinov3Config cfg) : base("block")
    {
        norm1 = new Common.PrecisionLayerNorm(cfg.EmbedDim, cfg.LayerNormEps, "norm1");
        attn = new SelfAttention(cfg.EmbedDim, cfg.NumHeads);
        ls1 = new LayerScale("ls1", cfg.EmbedDim, cfg.LayerscaleInit);
        norm2 = new Common.PrecisionLayerNorm(cfg.EmbedDim, cfg.LayerNormEps, "norm2");
        mlp = cfg.IsSwiGlu ? new SwiGluFfn(cfg.EmbedDim, cfg.FfnHidden) : new Mlp(cfg.EmbedDim, cfg.FfnHidden);
        ls2 = new LayerScale("ls2", cfg.EmbedDim, cfg.LayerscaleInit);
        RegisterComponents();
    }

    internal SelfAttention Attention => attn;

    public Tensor Forward(Tensor x, Tensor sin, Tensor cos)
    {
        using var scope = torch.NewDisposeScope();
        x = x + ls1.forward(attn.Forward(norm1.forward(x), sin, cos));
        x = x + ls2.forward(mlp.forward(norm2.forward(x)));
        return x.MoveToOuterDisposeScope();
    }
}
