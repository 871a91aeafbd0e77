using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Vae;

/// <summary>
/// The VAE baseline (LDM's AutoencoderKL): conv encoder -> <c>quant_conv</c> -> diagonal Gaussian
/// posterior over an <c>embed_dim</c>-channel latent -> <c>post_quant_conv</c> -> the same LDM decoder
/// SVG uses. Trained with the SVG autoencoder's recipe plus a small KL term; its latents are the
/// posterior means, and diffusion runs on them exactly as on SVG latents.
/// </summary>
public sealed class KlAutoencoder : nn.Module, ILatentAutoencoder
{
    public const string ConfigMetadataKey = "svgd.vae_config";

    public VaeConfig Config { get; }

    readonly VaeEncoder encoder;
    readonly Decoder decoder;
    readonly ConvLayer quant_conv;
    readonly ConvLayer post_quant_conv;

    public KlAutoencoder(VaeConfig config) : base("AutoencoderKL")
    {
        Config = config.Validate("VAE config");
        var dd = config.Ddconfig;
        encoder = new VaeEncoder(dd);
        decoder = new Decoder(dd);
        quant_conv = new ConvLayer(2 * dd.ZChannels, 2 * config.EmbedDim, 1);
        post_quant_conv = new ConvLayer(config.EmbedDim, dd.ZChannels, 1);
        RegisterComponents();
    }

    public string Kind => "vae";
    public int ImageSize => Config.ImageSize;
    public int LatentChannels => Config.EmbedDim;
    public int LatentSize => Config.LatentSize;
    public Decoder Decoder => decoder;
    public nn.Module Module => this;

    /// <summary>The posterior of images [B, 3, S, S] in [-1, 1].</summary>
    public DiagonalGaussian Posterior(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3 || images.shape[2] != ImageSize || images.shape[3] != ImageSize)
            throw new SvgdException($"the VAE takes images [B, 3, {ImageSize}, {ImageSize}], got {Checkpoint.Shape(images.shape)}");
        Tensor moments;
        using (torch.NewDisposeScope()) moments = quant_conv.forward(encoder.forward(images)).MoveToOuterDisposeScope();
        using (moments) return new DiagonalGaussian(moments);
    }

    public Tensor EncodeImages(Tensor images)
    {
        using var q = Posterior(images);
        return q.Mean.clone();
    }

    public Tensor Decode(Tensor latent)
    {
        if (latent.dim() != 4 || latent.shape[1] != Config.EmbedDim)
            throw new SvgdException($"latent must be [B, {Config.EmbedDim}, h, w] (VAE embed_dim), got {Checkpoint.Shape(latent.shape)}");
        using var scope = torch.NewDisposeScope();
        return decoder.Forward(post_quant_conv.forward(latent)).MoveToOuterDisposeScope();
    }

    public TrainingEncoding EncodeForTraining(Tensor images, Distributed.SampleRandom draws)
    {
        if (images.shape[0] != draws.Count) throw new InvalidOperationException($"{images.shape[0]} images but {draws.Count} sample streams");
        using var q = Posterior(images);
        using var eps = draws.Normal(q.Mean.shape[1], q.Mean.shape[2], q.Mean.shape[3]).to(q.Mean.dtype, q.Mean.device);
        // The KL is returned as a per-sample sum; the trainer takes the global-batch mean of it.
        return new TrainingEncoding(q.Sample(eps), q.Kl());
    }

    public IEnumerable<Parameter> TrainableParameters() => parameters();

    public (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) ToFile() =>
        (new Dictionary<string, Tensor>(state_dict()),
         new Dictionary<string, string> { ["format"] = "pt", [ConfigMetadataKey] = ConfigJson.Serialize(Config) });
}
