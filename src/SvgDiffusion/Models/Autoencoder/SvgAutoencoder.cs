using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Models.Encoders;
using SvgDiffusion.Models.ResNet;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>The intermediate and final results of one <see cref="SvgAutoencoder.EncodeDetailed"/> call.</summary>
public sealed record SvgEncoding(
    Tensor Semantic,        // [B, D, N] DINO patch features, channel-first
    Tensor ResidualRaw,     // [B, R, N] residual ViT output, before masking and alignment
    Tensor Residual,        // [B, R, N] what enters the latent: masked (training) and aligned
    Tensor Latent,          // [B, D + R, h, w]
    int GridH, int GridW) : IDisposable
{
    public void Dispose()
    {
        Semantic.Dispose(); ResidualRaw.Dispose(); Residual.Dispose(); Latent.Dispose();
    }
}

/// <summary>
/// The SVG autoencoder. Its latent is the frozen DINOv3 patch features (the semantic structure the
/// diffusion model benefits from) with a few residual channels appended that carry the detail DINO
/// discards; a conv decoder maps it back to pixels. Module names follow the reference's state dict:
/// <c>encoder</c> (DINOv3), <c>extra_vit</c>, <c>mask_token</c>, <c>decoder</c>; <c>alignment</c>
/// holds this port's running alignment statistics.
/// </summary>
public sealed class SvgAutoencoder : nn.Module, ILatentAutoencoder
{
    public SvgAutoencoderConfig Config { get; }

    // The frozen encoder: DINOv3 or ResNet-18, both nn.Modules implementing IFrozenEncoder.
    readonly nn.Module encoder;
    // Null in the ablation without a residual branch (residual_vit output_dim 0): the latent is the frozen features alone.
    readonly ResidualEncoder? extra_vit;
#pragma warning disable IDE0044 // registered by name
    Parameter? mask_token;
#pragma warning restore IDE0044
    readonly DistributionAlignment alignment;
    readonly Decoder decoder;

    /// <param name="semanticEncoder">An already loaded frozen encoder matching the config; when null a DINOv3 is
    /// built (weights to be loaded) or the ResNet-18 read from its shipped ONNX file.</param>
    public SvgAutoencoder(SvgAutoencoderConfig config, IFrozenEncoder? semanticEncoder = null) : base("SvgAutoencoder")
    {
        Config = config.Validate("SVG autoencoder config");
        if (semanticEncoder != null && (semanticEncoder.FeatureDim != config.SemanticDim || semanticEncoder.Stride != config.SemanticStride || semanticEncoder.Kind != config.FrozenEncoder))
            throw new SvgdException($"the {semanticEncoder.Kind} encoder ({semanticEncoder.FeatureDim} channels, stride {semanticEncoder.Stride}) does not fit the autoencoder config ({config.FrozenEncoder}, {config.SemanticDim} channels, stride {config.SemanticStride})");
        encoder = (nn.Module)(semanticEncoder ?? (config.IsResNet ? ResNet18Encoder.FromOnnx(config.Resnet) : new DinoVisionTransformer(config.Dino)));
        if (config.HasResidual)
        {
            extra_vit = new ResidualEncoder(config.ResidualVit);
            // [1, R, 1]: one learned value per residual channel, broadcast over the tokens of a masked sample.
            mask_token = new Parameter(torch.randn(1, config.ResidualVit.OutputDim, 1) * 0.02);
        }
        alignment = new DistributionAlignment(config.Alignment);
        decoder = new Decoder(config.Decoder);
        RegisterComponents();
        // DINO is never trained: its features are the latent's semantic half and must stay as released.
        foreach (var p in encoder.parameters()) p.requires_grad = false;
        encoder.eval();
    }

    public IFrozenEncoder SemanticEncoder => (IFrozenEncoder)encoder;
    public ResidualEncoder ResidualEncoder => extra_vit ?? throw new SvgdException("this SVG autoencoder has no residual branch (residual_vit output_dim 0)");
    public DistributionAlignment Alignment => alignment;
    public Decoder Decoder => decoder;
    public Parameter MaskToken => mask_token ?? throw new SvgdException("this SVG autoencoder has no residual branch (residual_vit output_dim 0)");

    public string Kind => "svg";
    public int ImageSize => Config.ResidualVit.ImageSize;
    public int LatentSize => Config.ResidualVit.GridSize;
    public int LatentChannels => Config.LatentChannels;
    public nn.Module Module => this;

    public Tensor EncodeImages(Tensor images)
    {
        using var x = ToEncoderInput(images);
        return Encode(x);
    }

    public TrainingEncoding EncodeForTraining(Tensor images, Distributed.SampleRandom draws)
    {
        using var x = ToEncoderInput(images);
        return new TrainingEncoding(Encode(x, draws), null);
    }

    /// <summary>The residual encoder, the mask token and the decoder: never the frozen encoder.</summary>
    public IEnumerable<Parameter> TrainableParameters()
    {
        var ps = decoder.parameters().ToList();
        if (extra_vit != null) ps = extra_vit.parameters().Concat(ps).Append(mask_token!).ToList();
        return ps;
    }

    public (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) ToFile() =>
        (new Dictionary<string, Tensor>(state_dict()),
         new Dictionary<string, string> { ["format"] = "pt", [SvgAutoencoderCheckpoint.ConfigMetadataKey] = SvgDiffusion.Config.ConfigJson.Serialize(Config) });

    /// <summary>Maps images in [-1, 1] to the ImageNet-normalised input both encoders take, in the reference's operation order.</summary>
    public static Tensor ToEncoderInput(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new SvgdException($"images must be [B, 3, H, W], got {Checkpoint.Shape(images.shape)}");
        using var unit = (images + 1.0) / 2.0;
        return Data.Preprocessing.Normalize(unit);
    }

    /// <summary>Latent of ImageNet-normalised images (see <see cref="ToEncoderInput"/>).</summary>
    /// <param name="images">[B, 3, H, W] with H = W = residual_vit image_size.</param>
    /// <returns>[B, D + R, H/p, W/p].</returns>
    public Tensor Encode(Tensor images, Generator? generator = null)
    {
        using var e = EncodeDetailed(images, generator);
        return e.Latent.alias();
    }

    /// <summary>Like <see cref="Encode(Tensor, Generator?)"/>, sample k's residual masking drawn from <paramref name="masking"/>'s
    /// k-th stream (see <see cref="Distributed.SampleRandom"/>) in training mode.</summary>
    public Tensor Encode(Tensor images, Distributed.SampleRandom masking)
    {
        if (images.shape[0] != masking.Count) throw new InvalidOperationException($"{images.shape[0]} images but {masking.Count} sample streams");
        using var e = EncodeDetailed(images, b => masking.Uniform().to(images.device));
        return e.Latent.alias();
    }

    /// <summary>Like <see cref="Encode(Tensor, Generator?)"/>, also returning the parts of the latent.</summary>
    /// <param name="generator">Draws the residual masking in training mode; unused in eval.</param>
    public SvgEncoding EncodeDetailed(Tensor images, Generator? generator = null) =>
        EncodeDetailed(images, b => torch.rand(b, generator: generator, device: images.device));

    /// <param name="uniform">[B] uniform draws deciding which samples' residuals are masked (training mode only).</param>
    SvgEncoding EncodeDetailed(Tensor images, Func<long, Tensor> uniform)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new SvgdException($"encoder input must be [B, 3, H, W], got {Checkpoint.Shape(images.shape)}");
        using var scope = torch.NewDisposeScope();
        long b = images.shape[0];
        Tensor semantic;
        int gh, gw;
        using (torch.no_grad())
        {
            using var grey = Config.LuminanceInput ? Data.Preprocessing.Luminance(images) : null;
            using var frozen = SemanticEncoder.Encode(grey ?? images);
            semantic = frozen.Patch.transpose(1, 2).contiguous();
            (gh, gw) = (frozen.GridH, frozen.GridW);
        }
        if (extra_vit == null)
        {
            var empty = semantic.narrow(1, 0, 0);
            return new SvgEncoding(semantic.MoveToOuterDisposeScope(), empty.clone().MoveToOuterDisposeScope(), empty.clone().MoveToOuterDisposeScope(),
                semantic.reshape(b, -1, gh, gw).MoveToOuterDisposeScope(), gh, gw);
        }
        var raw = extra_vit.Forward(images);
        var residual = raw;
        if (training && Config.MaskRatio > 0)
        {
            var flags = (uniform(b) < Config.MaskRatio)
                .to(residual.dtype).view(b, 1, 1);
            residual = residual * (1 - flags) + mask_token!.expand(b, -1, residual.shape[2]) * flags;
        }
        var aligned = alignment.Forward(semantic, residual);
        var latent = torch.cat(new[] { semantic, aligned }, dim: 1).view(b, -1, gh, gw);
        return new SvgEncoding(semantic.MoveToOuterDisposeScope(), raw.MoveToOuterDisposeScope(),
            aligned.MoveToOuterDisposeScope(), latent.MoveToOuterDisposeScope(), gh, gw);
    }

    /// <summary>Images (nominally in [-1, 1], not clamped) from latents [B, D + R, h, w].</summary>
    public Tensor Decode(Tensor latent)
    {
        if (latent.dim() != 4 || latent.shape[1] != Config.LatentChannels)
            throw new SvgdException($"latent must be [B, {Config.LatentChannels}, h, w] ({Config.SemanticDim} {Config.FrozenEncoder} + {Config.ResidualVit.OutputDim} residual channels), got {Checkpoint.Shape(latent.shape)}");
        return decoder.Forward(latent);
    }

    /// <summary>
    /// Sets the stored alignment statistics from the given batches of encoder inputs (an equal-weight
    /// average of their batch statistics), for <see cref="AlignmentMode.Stored"/> with a model trained without them.
    /// </summary>
    public void CalibrateAlignment(IEnumerable<Tensor> imageBatches)
    {
        if (extra_vit == null) throw new SvgdException("this SVG autoencoder has no residual branch, so no alignment to calibrate");
        alignment.ResetStatistics();
        using var _ = torch.no_grad();
        foreach (var images in imageBatches)
        {
            using var scope = torch.NewDisposeScope();
            using var grey = Config.LuminanceInput ? Data.Preprocessing.Luminance(images) : null;
            using var frozen = SemanticEncoder.Encode(grey ?? images);
            var semantic = frozen.Patch.transpose(1, 2);
            alignment.Accumulate(semantic, extra_vit.Forward(images));
        }
        if (!alignment.HasStoredStatistics) throw new SvgdException("alignment calibration needs at least one batch of images");
    }
}
