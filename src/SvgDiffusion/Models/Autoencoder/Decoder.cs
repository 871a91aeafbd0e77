using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Autoencoder;

/// <summary>
/// The LDM convolutional decoder that turns an SVG latent into pixels. It is built from the deepest
/// level up: <c>up[i]</c> is level i at width <c>ch * ch_mult[i]</c>, run from the last to the first,
/// each with <c>num_res_blocks + 1</c> residual blocks (attention after each block at the configured
/// resolutions) and a x2 upsample on all levels but level 0. The output is not squashed: images are
/// nominally in [-1, 1], and clamping is left to whoever turns them into pixels.
/// </summary>
public sealed class Decoder : nn.Module
{
    public DecoderConfig Config { get; }

    readonly ConvLayer conv_in;
    readonly MidBlock mid;
    readonly ModuleList<DecoderLevel> up;
    readonly GroupNorm norm_out;
    readonly ConvLayer conv_out;

    public Decoder(DecoderConfig config) : base("Decoder")
    {
        Config = config.Validate("decoder config");
        int levels = config.NumResolutions;
        int blockIn = config.Ch * config.ChMult[levels - 1];
        int res = config.LatentResolution;
        conv_in = new ConvLayer(config.ZChannels, blockIn, 3, padding: 1);
        mid = new MidBlock(blockIn, config.Dropout);
        var built = new DecoderLevel[levels];
        for (int level = levels - 1; level >= 0; level--)
        {
            int blockOut = config.Ch * config.ChMult[level];
            built[level] = new DecoderLevel(blockIn, blockOut, config.NumResBlocks + 1,
                config.AttnResolutions.Contains(res), upsample: level != 0, config.Dropout);
            blockIn = blockOut;
            if (level != 0) res *= 2;
        }
        up = new ModuleList<DecoderLevel>(built);
        norm_out = Normalize(blockIn);
        conv_out = new ConvLayer(blockIn, config.OutCh, 3, padding: 1);
        RegisterComponents();
    }

    /// <summary>LDM's normalisation everywhere in the decoder.</summary>
    internal static GroupNorm Normalize(int channels)
    {
        var norm = GroupNorm(32, channels, eps: 1e-6, affine: true);
        // TorchSharp 0.107 leaves GroupNorm's affine parameters uninitialised (garbage, even NaN);
        // PyTorch starts them at the identity, which fresh models need.
        using (torch.no_grad())
        {
            norm.weight!.fill_(1);
            norm.bias!.zero_();
        }
        return norm;
    }

    /// <summary>The output convolution's weight: where the adaptive GAN weight compares gradient norms.</summary>
    public Parameter LastLayerWeight => conv_out.Weight;

    /// <summary>
    /// Disposes <paramref name="previous"/> once <paramref name="next"/> (computed from it) exists, so a
    /// forward holds one activation per step instead of all until its scope ends. The caller's input
    /// (<paramref name="keep"/>) is never disposed.
    /// </summary>
    internal static Tensor Replace(Tensor previous, Tensor next, Tensor? keep = null)
    {
        if (!ReferenceEquals(previous, next) && !ReferenceEquals(previous, keep)) previous.Dispose();
        return next;
    }

    /// <summary>Default <see cref="ChunkBytes"/>: 64 MiB, two 256-px images at the released decoder's full-resolution width in fp32, four in bf16.</summary>
    public const long DefaultChunkBytes = 64L << 20;

    /// <summary>
    /// Without autograd, the batch is decoded in chunks whose full-resolution activation (ch * ch_mult[0]
    /// channels at the output size) stays under this many bytes; 0 decodes it whole. The convolutions run
    /// as fast on 2 images as on 8 at these sizes, and the smaller working set is memory that need not be
    /// touched for the first time: on a Firecracker VM that costs about 3 s of system time per GB. Released
    /// decoder, batch 8, fp32, first pass: peak RSS 1.9-2.4 GB -> 0.8 GB, system time 3.5 s -> 0.45 s, steady
    /// time per batch unchanged (6.6-7.7 s whole, 7.1-7.5 s in chunks of 2).
    /// </summary>
    public long ChunkBytes { get; set; } = DefaultChunkBytes;

    /// <summary>Images per chunk for <paramref name="latent"/> under <see cref="ChunkBytes"/> (the whole batch when 0).</summary>
    public long ChunkSize(Tensor latent)
    {
        long b = latent.shape[0];
        if (ChunkBytes <= 0) return Math.Max(1, b);
        long scale = 1L << (Config.NumResolutions - 1);
        long perImage = (long)Config.Ch * Config.ChMult[0] * latent.shape[2] * scale * latent.shape[3] * scale * conv_out.Weight.ElementSize;
        return Math.Clamp(ChunkBytes / Math.Max(1, perImage), 1, Math.Max(1, b));
    }

    /// <param name="latent">[B, z_channels, h, w].</param>
    /// <returns>[B, out_ch, h * 2^(levels-1), w * 2^(levels-1)].</returns>
    public Tensor Forward(Tensor latent)
    {
        if (latent.dim() != 4 || latent.shape[1] != Config.ZChannels)
            throw new SvgdException($"decoder expects a latent [B, {Config.ZChannels}, h, w], got {Checkpoint.Shape(latent.shape)}");
        long b = latent.shape[0], chunk = ChunkSize(latent);
        // With autograd every chunk's activations are kept for the backward anyway: no saving.
        if (chunk >= b || torch.is_grad_enabled()) return ForwardWhole(latent);
        using var scope = torch.NewDisposeScope();
        var parts = new List<Tensor>();
        for (long s = 0; s < b; s += chunk) parts.Add(ForwardWhole(latent.narrow(0, s, Math.Min(chunk, b - s))));
        return torch.cat(parts, 0).MoveToOuterDisposeScope();
    }

    Tensor ForwardWhole(Tensor latent)
    {
        using var scope = torch.NewDisposeScope();
        // Channels-last (NHWC) activations: oneDNN's convs work in that layout natively, and group
        // norm, SiLU and nearest upsampling keep it, so no reorder runs between layers. Measured on the
        // released decoder (fp32, 2-core AVX2 EPYC): 2547 -> 2499 ms per image, within noise; kept
        // because it costs nothing and wider-vector oneDNN kernels favour it. Only the image leaves NCHW.
        var x = latent.device_type == DeviceType.CPU ? latent.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) : latent;
        var h = conv_in.forward(x);
        h = Replace(h, mid.forward(h));
        for (int level = up.Count - 1; level >= 0; level--) h = Replace(h, up[level].forward(h));
        h = Replace(h, Activation.Swish(norm_out.forward(h)));
        h = Replace(h, conv_out.forward(h));
        return h.contiguous().MoveToOuterDisposeScope();
    }
}

/// <summary>The decoder's bottleneck: residual block, attention, residual block at the latent size.</summary>
public sealed class MidBlock : Module<Tensor, Tensor>
{
    readonly ResnetBlock block_1, block_2;
    readonly SpatialSelfAttention attn_1;

    public MidBlock(int channels, double dropout) : base("mid")
    {
        block_1 = new ResnetBlock("block_1", channels, channels, dropout);
        attn_1 = new SpatialSelfAttention("attn_1", channels);
        block_2 = new ResnetBlock("block_2", channels, channels, dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = block_1.forward(x);
        h = Decoder.Replace(h, attn_1.forward(h));
        return Decoder.Replace(h, block_2.forward(h)).MoveToOuterDisposeScope();
    }
}

/// <summary>One resolution level of the decoder (<c>up[i]</c>): blocks, optional attention, optional upsample.</summary>
public sealed class DecoderLevel : Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock> block;
    // Empty where the level's resolution has no attention; its entries pair with the blocks by index.
    readonly ModuleList<SpatialSelfAttention> attn;
    readonly Upsample? upsample;

    public DecoderLevel(int inChannels, int outChannels, int blocks, bool withAttention, bool upsample, double dropout) : base("up")
    {
        (block, attn) = Blocks(inChannels, outChannels, blocks, withAttention, dropout);
        if (upsample) this.upsample = new Upsample(outChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = RunBlocks(block, attn, x);
        if (upsample != null) h = Decoder.Replace(h, upsample.forward(h), keep: x);
        return (ReferenceEquals(h, x) ? h.alias() : h).MoveToOuterDisposeScope();
    }

    /// <summary>A level's residual blocks (the first changes the width) and, where the level has attention, one attention per block,
    /// named by index as in LDM's checkpoints. The encoder's levels (<c>down[i]</c>) are built the same way.</summary>
    internal static (ModuleList<ResnetBlock> Block, ModuleList<SpatialSelfAttention> Attn) Blocks(int inChannels, int outChannels, int blocks, bool withAttention, double dropout) =>
        (new ModuleList<ResnetBlock>(Enumerable.Range(0, blocks)
            .Select(j => new ResnetBlock(j.ToString(), j == 0 ? inChannels : outChannels, outChannels, dropout)).ToArray()),
         new ModuleList<SpatialSelfAttention>(withAttention
            ? Enumerable.Range(0, blocks).Select(j => new SpatialSelfAttention(j.ToString(), outChannels)).ToArray()
            : Array.Empty<SpatialSelfAttention>()));

    /// <summary>Each block, then its attention where the level has attention.</summary>
    internal static Tensor RunBlocks(ModuleList<ResnetBlock> block, ModuleList<SpatialSelfAttention> attn, Tensor x)
    {
        var h = x;
        for (int j = 0; j < block.Count; j++)
        {
            h = Decoder.Replace(h, block[j].forward(h), keep: x);
            if (attn.Count > 0) h = Decoder.Replace(h, attn[j].forward(h), keep: x);
        }
        return h;
    }
}
