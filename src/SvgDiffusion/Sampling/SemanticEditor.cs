using SvgDiffusion.Data;
using SvgDiffusion.Models.Autoencoder;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Sampling;

/// <summary>
/// Edits that use the SVG latent's split and need no diffusion model. The first <c>SemanticDim</c> channels
/// are the frozen encoder's features (what the image shows), the rest the residual encoder's (colour, texture,
/// the detail the frozen encoder drops), so one image's semantics can be decoded with another's detail, and
/// two images can be blended in the latent space rather than in pixels.
/// </summary>
public sealed class SemanticEditor(SvgAutoencoder autoencoder, ScalarType precision = ScalarType.Float32)
{
    public SvgAutoencoder Autoencoder => autoencoder;
    /// <summary>Side of the square images the autoencoder takes and makes.</summary>
    public int ImageSize => autoencoder.Config.ResidualVit.ImageSize;
    public int SemanticChannels => autoencoder.Config.SemanticDim;
    public int ResidualChannels => autoencoder.Config.ResidualVit.OutputDim;

    /// <summary>RGB uint8 images [3, h, w] of any size to the autoencoder's input [B, 3, S, S] in [-1, 1] (shorter side resized, centre crop).</summary>
    public Tensor Prepare(IEnumerable<Tensor> rgb)
    {
        using var scope = torch.NewDisposeScope();
        var items = rgb.Select(x => ImageFolder.CenterCrop(ImageFolder.ResizeShorter(x, ImageSize), ImageSize)).ToList();
        if (items.Count == 0) throw new SvgdException("no images given");
        return (torch.stack(items) * 2.0 - 1.0).MoveToOuterDisposeScope();
    }

    /// <summary>Latents [B, C, h, w] of images [B, 3, S, S] in [-1, 1], all in one batch (the same alignment statistics for all).</summary>
    public Tensor Encode(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var z = autoencoder.Encode(SvgAutoencoder.ToEncoderInput(images).to(precision)).to(ScalarType.Float32);
        return Runtime.Finite.Output(z, "the encoded latents").MoveToOuterDisposeScope();
    }

    /// <summary>Images [B, 3, S, S] in [-1, 1] from latents.</summary>
    public Tensor Decode(Tensor latents)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.inference_mode();
        var images = autoencoder.Decode(latents.to(precision)).to(ScalarType.Float32);
        return Runtime.Finite.Output(images, "the decoded images").clamp(-1, 1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The latent with the semantic channels of <paramref name="semantic"/> and the residual channels of
    /// <paramref name="detail"/> (both [B, C, h, w], or broadcastable batches of one).
    /// </summary>
    public Tensor MixLatents(Tensor semantic, Tensor detail)
    {
        if (semantic.dim() != 4 || semantic.shape[1] != autoencoder.Config.LatentChannels || !semantic.shape.Skip(1).SequenceEqual(detail.shape.Skip(1)))
            throw new SvgdException($"mixing needs two [B, {autoencoder.Config.LatentChannels}, h, w] latents, got {Checkpoints.Checkpoint.Shape(semantic.shape)} and {Checkpoints.Checkpoint.Shape(detail.shape)}");
        using var scope = torch.NewDisposeScope();
        var s = semantic.narrow(1, 0, SemanticChannels);
        var d = detail.narrow(1, SemanticChannels, ResidualChannels);
        if (s.shape[0] != d.shape[0])
        {
            long b = Math.Max(s.shape[0], d.shape[0]);
            s = s.expand(b, -1, -1, -1);
            d = d.expand(b, -1, -1, -1);
        }
        return torch.cat(new[] { s, d }, 1).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>Encoded and decoded: what the autoencoder keeps of each image. [B, 3, S, S].</summary>
    public Tensor Reconstruct(IEnumerable<Tensor> rgb)
    {
        using var scope = torch.NewDisposeScope();
        return Decode(Encode(Prepare(rgb))).MoveToOuterDisposeScope();
    }

    /// <summary>What <paramref name="semanticRgb"/> shows, with the detail of <paramref name="detailRgb"/>: [1, 3, S, S].</summary>
    public Tensor Mix(Tensor semanticRgb, Tensor detailRgb)
    {
        using var scope = torch.NewDisposeScope();
        var z = Encode(Prepare(new[] { semanticRgb, detailRgb }));
        return Decode(MixLatents(z.narrow(0, 0, 1), z.narrow(0, 1, 1))).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <paramref name="frames"/> images on the straight line between the two images' latents, endpoints
    /// included (the first and last are the reconstructions): [frames, 3, S, S].
    /// </summary>
    public Tensor Interpolate(Tensor aRgb, Tensor bRgb, int frames, string framesOption = "frames")
    {
        if (frames < 2) throw new SvgdException($"{framesOption} must be at least 2 (both ends of the path), got {frames}");
        // Kept until written: the latents on the path, and the frames three times (decoded, strip, encoded).
        long side = Autoencoder.ImageSize;
        long perFrame = 4L * Autoencoder.LatentChannels * Autoencoder.LatentSize * Autoencoder.LatentSize + 3 * 4L * 3 * side * side;
        Runtime.ResourceBudget.RequireMemory($"{frames:N0} frames kept until written", frames * perFrame, framesOption);
        using var scope = torch.NewDisposeScope();
        var z = Encode(Prepare(new[] { aRgb, bRgb }));
        var path = LatentPath.Lerp(z[0], z[1], LatentPath.Fractions(frames));
        return Decode(path).MoveToOuterDisposeScope();
    }
}
