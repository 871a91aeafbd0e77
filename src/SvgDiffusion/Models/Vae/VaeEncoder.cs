using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Vae;

/// <summary>
/// The LDM convolutional encoder, the mirror of <see cref="Decoder"/>: <c>down[i]</c> is level i with
/// <c>num_res_blocks</c> residual blocks (attention at the configured resolutions) and a stride-2
/// downsample on all levels but the last, then the mid block, and a conv to 2 x z_channels (the
/// posterior's mean and log-variance) as <c>double_z</c> asks.
/// </summary>
public sealed class VaeEncoder : nn.Module<Tensor, Tensor>
{
    public DecoderConfig Config { get; }

    readonly ConvLayer conv_in;
    readonly ModuleList<EncoderLevel> down;
    readonly MidBlock mid;
    readonly GroupNorm norm_out;
    readonly ConvLayer conv_out;

    public VaeEncoder(DecoderConfig config) : base("Encoder")
    {
        Config = config.Validate("encoder config");
        int levels = config.NumResolutions, res = config.Resolution;
        conv_in = new ConvLayer(config.InChannels, config.Ch, 3, padding: 1);
        var built = new EncoderLevel[levels];
        int blockIn = config.Ch;
        for (int level = 0; level < levels; level++)
        {
            int blockOut = config.Ch * config.ChMult[level];
            built[level] = new EncoderLevel(blockIn, blockOut, config.NumResBlocks, config.AttnResolutions.Contains(res),
                downsample: level != levels - 1, config.Dropout);
            blockIn = blockOut;
            if (level != levels - 1) res /= 2;
        }
        down = new ModuleList<EncoderLevel>(built);
        mid = new MidBlock(blockIn, config.Dropout);
        norm_out = Decoder.Normalize(blockIn);
        conv_out = new ConvLayer(blockIn, config.DoubleZ ? 2 * config.ZChannels : config.ZChannels, 3, padding: 1);
        RegisterComponents();
    }

    /// <param name="images">[B, in_channels, resolution, resolution] in [-1, 1].</param>
    /// <returns>[B, 2 z (or z), h, w] moments.</returns>
    public override Tensor forward(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != Config.InChannels)
            throw new SvgdException($"encoder expects images [B, {Config.InChannels}, H, W], got {Checkpoint.Shape(images.shape)}");
        using var scope = torch.NewDisposeScope();
        var h = conv_in.forward(images);
        foreach (var level in down) h = level.forward(h);
        h = mid.forward(h);
        return conv_out.forward(functional.silu(norm_out.forward(h))).MoveToOuterDisposeScope();
    }
}

/// <summary>One resolution level of the encoder (<c>down[i]</c>): blocks, optional attention, optional downsample.</summary>
public sealed class EncoderLevel : Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock> block;
    readonly ModuleList<SpatialSelfAttention> attn;
    readonly Downsample? downsample;

    public EncoderLevel(int inChannels, int outChannels, int blocks, bool withAttention, bool downsample, double dropout) : base("down")
    {
        (block, attn) = DecoderLevel.Blocks(inChannels, outChannels, blocks, withAttention, dropout);
        if (downsample) this.downsample = new Downsample(blocks > 0 ? outChannels : inChannels);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        x = DecoderLevel.RunBlocks(block, attn, x);
        if (downsample != null) x = downsample.forward(x);
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>LDM's stride-2 3x3 conv with the asymmetric (right/bottom) zero pad that halves even sizes exactly.</summary>
public sealed class Downsample : Module<Tensor, Tensor>
{
    readonly ConvLayer conv;

    public Downsample(int channels) : base("downsample")
    {
        conv = new ConvLayer(channels, channels, 3, stride: 2, padding: 0);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var padded = functional.pad(x, new long[] { 0, 1, 0, 1 });
        return conv.forward(padded);
    }
}
