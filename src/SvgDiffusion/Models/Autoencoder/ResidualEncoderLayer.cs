using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// Self-attention with one packed input projection, stored as <c>nn.MultiheadAttention</c> stores it
/// (<c>in_proj_weight</c>, <c>in_proj_bias</c>, <c>out_proj</c>) so torchvision ViT weights load unchanged.
/// </summary>
public sealed class PackedSelfAttention : Module<Tensor, Tensor>
{
    readonly int _heads;
    readonly double _dropout;
    readonly SampleDropout attention_dropout;
#pragma warning disable IDE0044 // registered by name
    Parameter in_proj_weight;
    Parameter in_proj_bias;
#pragma warning restore IDE0044
    readonly PackedLinear out_proj;
    readonly PackedWeightSlot in_proj = new();

    public PackedSelfAttention(int dim, int heads, double dropout) : base("self_attention")
    {
        _heads = heads;
        _dropout = dropout;
        attention_dropout = new SampleDropout(dropout);
        // Same scheme as nn.MultiheadAttention: Xavier-uniform packed projection, zero biases.
        var w = torch.empty(3L * dim, dim);
        nn.init.xavier_uniform_(w);
        in_proj_weight = new Parameter(w);
        in_proj_bias = new Parameter(torch.zeros(3L * dim));
        out_proj = new PackedLinear(dim, dim);
        using (torch.no_grad()) out_proj.bias!.zero_();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        long b = x.shape[0], n = x.shape[1], d = x.shape[2];
        var qkv = in_proj.Linear(x, in_proj_weight, in_proj_bias)
            .view(b, n, 3, _heads, d / _heads).permute(2, 0, 3, 1, 4);
        Tensor o;
        if (training && _dropout > 0)
        {
            // Spelled out so the attention weights' dropout draws per sample (SampleDropout); the fused
            // kernel would draw from torch's global generator. Same maths as scaled_dot_product_attention.
            var (q, k, v) = (qkv[0], qkv[1], qkv[2]);
            var weights = functional.softmax(torch.matmul(q, k.transpose(-2, -1)) / Math.Sqrt(d / _heads), -1);
            o = torch.matmul(attention_dropout.forward(weights), v);
        }
        else o = functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]);
        return out_proj.forward(o.transpose(1, 2).reshape(b, n, d)).MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) in_proj.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>torchvision's pre-norm <c>EncoderBlock</c>: attention and MLP residual branches, each after a LayerNorm.</summary>
public sealed class ResidualEncoderLayer : Module<Tensor, Tensor>
{
    readonly LayerNorm ln_1, ln_2;
    readonly PackedSelfAttention self_attention;
    readonly SampleDropout dropout;
    // Indices 0 and 3 carry weights, as in torchvision's MLPBlock (Linear, GELU, Dropout, Linear, Dropout).
    readonly Sequential mlp;

    public ResidualEncoderLayer(string name, ResidualEncoderConfig cfg) : base(name)
    {
        ln_1 = LayerNorm(cfg.Hidden, cfg.LayerNormEps);
        self_attention = new PackedSelfAttention(cfg.Hidden, cfg.Heads, cfg.AttentionDropout);
        dropout = new SampleDropout(cfg.Dropout);
        ln_2 = LayerNorm(cfg.Hidden, cfg.LayerNormEps);
        mlp = Sequential(
            new PackedLinear(cfg.Hidden, cfg.Mlp), GELU(), new SampleDropout(cfg.Dropout),
            new PackedLinear(cfg.Mlp, cfg.Hidden), new SampleDropout(cfg.Dropout));
        // torchvision's MLPBlock initialisation, so training from scratch starts where the reference does.
        using (torch.no_grad())
        {
            foreach (var lin in mlp.children().OfType<PackedLinear>())
            {
                nn.init.xavier_uniform_(lin.weight!);
                nn.init.normal_(lin.bias!, std: 1e-6);
            }
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = x + dropout.forward(self_attention.forward(ln_1.forward(x)));
        return (h + mlp.forward(ln_2.forward(h))).MoveToOuterDisposeScope();
    }
}
