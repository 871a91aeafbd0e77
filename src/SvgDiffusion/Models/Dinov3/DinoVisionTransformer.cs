using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Dinov3;

/// <summary>Everything one DINOv3 forward pass yields.</summary>
public sealed record Dinov3Output(
    Tensor Cls,                               // [B, D] normed class token
    Tensor Registers,                         // [B, R, D] normed register (storage) tokens
    Tensor Patch,                             // [B, N, D] normed patch tokens, row-major
    Tensor PreNorm,                           // [B, 1+R+N, D] tokens before the final norm
    IReadOnlyDictionary<int, Tensor> Layers,  // block index -> normed patch tokens, [B, D, h, w] or [B, N, D]
    int GridH, int GridW) : IDisposable
{
    public void Dispose()
    {
        Cls.Dispose(); Registers.Dispose(); Patch.Dispose(); PreNorm.Dispose();
        foreach (var t in Layers.Values) t.Dispose();
    }
}

/// <summary>
/// The DINOv3 ViT, the frozen semantic encoder of SVG. Parameter names follow the official
/// state dict (<c>cls_token</c>, <c>storage_tokens</c>, <c>blocks.N.attn.qkv</c>, <c>ls1.gamma</c>, ...);
/// Hugging Face checkpoints are renamed on load (<see cref="Dinov3Checkpoint"/>).
/// </summary>
public sealed class DinoVisionTransformer : nn.Module, Encoders.IFrozenEncoder
{
    public Dinov3Config Config { get; }

#pragma warning disable IDE0044
    Parameter cls_token;
    Parameter storage_tokens;
    Parameter mask_token;
#pragma warning restore IDE0044
    readonly PatchEmbed patch_embed;
    readonly RopePositionEmbedding rope_embed;
    readonly ModuleList<SelfAttentionBlock> blocks;
    readonly Common.PrecisionLayerNorm norm;

    public DinoVisionTransformer(Dinov3Config config) : base("DinoVisionTransformer")
    {
        Config = config.Validate("DINOv3 config");
        int d = config.EmbedDim;
        cls_token = new Parameter(torch.randn(1, 1, d) * 0.02);
        storage_tokens = new Parameter(torch.randn(1, config.NStorageTokens, d) * 0.02);
        mask_token = new Parameter(torch.zeros(1, d));
        patch_embed = new PatchEmbed(config.InChans, d, config.PatchSize);
        rope_embed = new RopePositionEmbedding(config.HeadDim, config.RopeBase);
        blocks = new ModuleList<SelfAttentionBlock>(Enumerable.Range(0, config.Depth).Select(_ => new SelfAttentionBlock(config)).ToArray());
        norm = new Common.PrecisionLayerNorm(d, config.LayerNormEps);
        RegisterComponents();
    }

    public RopePositionEmbedding Rope => rope_embed;
    internal IEnumerable<SelfAttentionBlock> Blocks => blocks;

    /// <param name="images">[B, C, H, W], ImageNet-normalised; H and W multiples of the patch size.</param>
    /// <param name="layers">Block indices whose normed patch tokens to return (negative counts from the end).</param>
    /// <param name="reshapeLayers">Return intermediate layers as [B, D, h, w] rather than [B, N, D].</param>
    public Dinov3Output Forward(Tensor images, IReadOnlyCollection<int>? layers = null, bool reshapeLayers = true)
    {
        if (images.dim() != 4 || images.shape[1] != Config.InChans)
            throw new SvgdException($"DINOv3 input must be [B, {Config.InChans}, H, W], got {Checkpoints.Checkpoint.Shape(images.shape)}");
        long hImg = images.shape[2], wImg = images.shape[3];
        int p = Config.PatchSize;
        if (hImg % p != 0 || wImg % p != 0)
            throw new SvgdException($"DINOv3 input {hImg}x{wImg} is not a multiple of the patch size {p}");
        int h = (int)(hImg / p), w = (int)(wImg / p);
        var wanted = new SortedSet<int>();
        foreach (int l in layers ?? Array.Empty<int>())
        {
            int idx = l < 0 ? Config.Depth + l : l;
            if (idx < 0 || idx >= Config.Depth) throw new SvgdException($"layer {l} is out of range for a {Config.Depth}-block model");
            wanted.Add(idx);
        }

        using var scope = torch.NewDisposeScope();
        long b = images.shape[0];
        var x = PrepareTokens(images);
        var (sin, cos) = rope_embed.Forward(h, w);
        sin = sin.to(x.device); cos = cos.to(x.device);
        var inter = new Dictionary<int, Tensor>();
        int i = 0;
        foreach (var blk in blocks)
        {
            x = blk.Forward(x, sin, cos);
            if (wanted.Contains(i))
            {
                var patches = norm.forward(x).narrow(1, 1 + Config.NStorageTokens, (long)h * w);
                inter[i] = reshapeLayers ? patches.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous() : patches;
            }
            i++;
        }
        var xn = norm.forward(x);
        int r = Config.NStorageTokens;
        var output = new Dinov3Output(
            xn.select(1, 0).MoveToOuterDisposeScope(),
            xn.narrow(1, 1, r).MoveToOuterDisposeScope(),
            xn.narrow(1, 1 + r, (long)h * w).MoveToOuterDisposeScope(),
            x.MoveToOuterDisposeScope(),
            inter.ToDictionary(kv => kv.Key, kv => kv.Value.MoveToOuterDisposeScope()),
            h, w);
        return output;
    }

    public string Kind => "dinov3";
    public int FeatureDim => Config.EmbedDim;
    public int Stride => Config.PatchSize;

    public Encoders.FrozenFeatures Encode(Tensor images)
    {
        var o = Forward(images);
        o.Registers.Dispose();
        o.PreNorm.Dispose();
        return new Encoders.FrozenFeatures(o.Patch, o.Cls, o.GridH, o.GridW);
    }

    /// <summary>Patch tokens only, [B, N, D]: what SVG concatenates its residual channels to.</summary>
    public Tensor PatchTokens(Tensor images)
    {
        using var o = Forward(images);
        return o.Patch.clone();
    }

    Tensor PrepareTokens(Tensor images)
    {
        var x = patch_embed.forward(images);                       // [B, N, D]
        long b = x.shape[0];
        // The official model adds 0 * mask_token so the parameter is always used; numerically a no-op.
        var cls = (cls_token + 0 * mask_token).expand(b, -1, -1);
        var regs = storage_tokens.expand(b, -1, -1);
        return torch.cat(new[] { cls, regs, x }, dim: 1);
    }
}

public sealed class PatchEmbed : Module<Tensor, Tensor>
{
    readonly ConvLayer proj;
    public PatchEmbed(int inChans, int dim, int patch) : base("patch_embed")
    {
        proj = new ConvLayer(inChans, dim, patch, stride: patch);
        RegisterComponents();
    }
    public override Tensor forward(Tensor x)
    {
        using var y = proj.forward(x);
        return y.flatten(2).transpose(1, 2);
    }
}
