using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// SVG's residual branch: a small ViT that sees the same input as DINO and recovers, per patch, the
/// fine detail the frozen semantic features drop. The layout is torchvision's <c>VisionTransformer</c>
/// (the reference builds one and swaps its head), so its weights load under the reference names;
/// the head is applied to every patch token instead of the class token.
/// </summary>
public sealed class ResidualEncoder : nn.Module
{
    public ResidualEncoderConfig Config { get; }

#pragma warning disable IDE0044 // registered by name
    Parameter class_token;
#pragma warning restore IDE0044
    readonly ConvLayer conv_proj;
    readonly TransformerEncoder encoder;
    readonly Sequential heads;

    public ResidualEncoder(ResidualEncoderConfig config) : base("ResidualEncoder")
    {
        Config = config.Validate("residual_vit config");
        int d = config.Hidden;
        conv_proj = new ConvLayer(3, d, config.PatchSize, stride: config.PatchSize);
        // The class token only takes part in attention; it is dropped before the head.
        class_token = new Parameter(torch.zeros(1, 1, d));
        encoder = new TransformerEncoder(config);
        heads = Sequential(new PackedLinear(d, d), GELU(), new PackedLinear(d, config.OutputDim));
        RegisterComponents();
    }

    /// <param name="images">[B, 3, image_size, image_size], the same ImageNet-normalised input DINO gets.</param>
    /// <returns>[B, output_dim, N] residual features, channel-first like the DINO features they are joined to.</returns>
    public Tensor Forward(Tensor images)
    {
        int s = Config.ImageSize;
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != s || images.shape[3] != s)
            throw new SvgdException($"residual encoder input must be [B, 3, {s}, {s}] (its position table is fixed to {s}x{s}), got {Checkpoint.Shape(images.shape)}");
        using var scope = torch.NewDisposeScope();
        long b = images.shape[0];
        var x = conv_proj.forward(images).flatten(2).transpose(1, 2);          // [B, N, D]
        x = torch.cat(new[] { class_token.expand(b, -1, -1), x }, dim: 1);
        x = encoder.forward(x).narrow(1, 1, x.shape[1] - 1);
        return heads.forward(x).transpose(1, 2).contiguous().MoveToOuterDisposeScope();
    }
}

/// <summary>torchvision's ViT <c>Encoder</c>: learned positions, the layer stack, a final LayerNorm.</summary>
public sealed class TransformerEncoder : Module<Tensor, Tensor>
{
#pragma warning disable IDE0044 // registered by name
    Parameter pos_embedding;
#pragma warning restore IDE0044
    readonly SampleDropout dropout;
    // Keyed encoder_layer_N, the names torchvision gives its OrderedDict of blocks. A Sequential, not a
    // ModuleDict: TorchSharp 0.107's ModuleDict cannot be converted with .to(dtype).
    readonly Sequential layers;
    readonly LayerNorm ln;

    public TransformerEncoder(ResidualEncoderConfig cfg) : base("encoder")
    {
        pos_embedding = new Parameter(torch.randn(1, cfg.NumPatches + 1, cfg.Hidden) * 0.02);
        dropout = new SampleDropout(cfg.Dropout);
        layers = Sequential(Enumerable.Range(0, cfg.Layers)
            .Select(i => ($"encoder_layer_{i}", (Module<Tensor, Tensor>)new ResidualEncoderLayer($"encoder_layer_{i}", cfg))).ToArray());
        ln = LayerNorm(cfg.Hidden, cfg.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        x = dropout.forward(x + pos_embedding);
        return ln.forward(layers.forward(x)).MoveToOuterDisposeScope();
    }
}
