using SvgDiffusion.Models.Common;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// The SVG diffusion transformer (SiT-style DiT): predicts the rectified-flow velocity of latent tokens
/// given the flow time and a class label. Each position of the latent grid is one token, embedded by a
/// linear layer (<c>ln1</c>) instead of DiT's patch convolution because SVG latents are already coarse
/// (16x16) and wide (392 channels). Parameter names follow the released state dict (<c>pos_embed</c>,
/// <c>t_embedder</c>, <c>y_embedder</c>, <c>blocks.N</c>, <c>ln1</c>, <c>final_layer</c>).
/// </summary>
public sealed class DiT : nn.Module
{
    public DiTConfig Config { get; }

#pragma warning disable IDE0044 // registered by name
    Parameter pos_embed;
#pragma warning restore IDE0044
    readonly TimestepEmbedder t_embedder;
    readonly LabelEmbedder y_embedder;
    readonly ModuleList<DiTBlock> blocks;
    readonly PackedLinear ln1;
    readonly FinalLayer final_layer;
    // Position tables for grids other than the configured one; formulas, so never saved.
    readonly Dictionary<(int, int), Tensor> _otherGrids = new();

    public DiT(DiTConfig config) : base("DiT")
    {
        Config = config.Validate("DiT config");
        int d = config.HiddenSize;
        // Kept in the state dict like the reference (a frozen parameter), so released files load as they are.
        pos_embed = new Parameter(SinCosPositionEmbedding.Create(d, config.InputSize, config.InputSize).unsqueeze(0), requires_grad: false);
        t_embedder = new TimestepEmbedder(d);
        y_embedder = new LabelEmbedder(config.NumClasses, d, config.ClassDropoutProb);
        blocks = new ModuleList<DiTBlock>(Enumerable.Range(0, config.Depth).Select(i => new DiTBlock(i.ToString(), config)).ToArray());
        ln1 = new PackedLinear(config.InChannels, d);
        final_layer = new FinalLayer(d, config.OutChannels);
        RegisterComponents();
        if (!WeightInit.Skipping) InitializeWeights();
    }

    /// <summary>DiT's initialisation: Xavier linears, small embeddings, and zeroed adaLN and output so every block starts as the identity.</summary>
    void InitializeWeights()
    {
        using var _ = torch.no_grad();
        foreach (var lin in new[] { ln1 }.Concat(blocks.SelectMany(b => b.Linears)).Concat(t_embedder.Linears))
        {
            nn.init.xavier_uniform_(lin.weight!);
            lin.bias?.zero_();
        }
        nn.init.normal_(y_embedder.Table.weight!, std: 0.02);
        foreach (var lin in t_embedder.Linears) nn.init.normal_(lin.weight!, std: 0.02);
        foreach (var lin in blocks.Select(b => b.Modulation).Append(final_layer.Modulation).Append(final_layer.Output))
        {
            lin.weight!.zero_();
            lin.bias!.zero_();
        }
    }

    /// <summary>The precision of the token embedding, the label table and the blocks (see <see cref="SetComputePrecision"/>).</summary>
    public ScalarType ComputePrecision => ln1.weight!.dtype;

    /// <summary>
    /// Runs the token embedding, label table and blocks in <paramref name="dtype"/> (weights and activations)
    /// while the timestep embedding and the final layer keep fp32 weights: the time features are sines of
    /// small differences that bf16's 8-bit mantissa would round together, and the final layer's output is the
    /// velocity the sampler integrates. Inputs and outputs of <see cref="Forward"/> stay fp32 either way.
    /// For inference; training keeps one precision throughout. Converting rounds the weights, so the way
    /// back to a wider precision is a reload, not another call.
    /// </summary>
    public void SetComputePrecision(ScalarType dtype)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new SvgdException($"the DiT computes in fp32, bf16 or fp64, not {dtype}");
        if (ComputePrecision == ScalarType.BFloat16 && dtype != ScalarType.BFloat16)
            throw new SvgdException($"this DiT's weights were rounded to bf16; load it again to run in {Runtime.Precision.Name(dtype)}");
        ln1.to(dtype);
        y_embedder.to(dtype);
        foreach (var blk in blocks) blk.to(dtype);
        var outer = dtype == ScalarType.Float64 ? dtype : ScalarType.Float32;
        t_embedder.to(outer);
        final_layer.to(outer);
    }

    /// <summary>The null label, used for the unconditional half of classifier-free guidance.</summary>
    public int NullLabel => Config.NumClasses;

    /// <summary>
    /// Model output for tokens.
    /// </summary>
    /// <param name="x">[B, T, C] latent tokens, the grid flattened row-major.</param>
    /// <param name="t">[B] flow time in [0, 1] (1 = data), or a single value for the whole batch.</param>
    /// <param name="y">[B] labels in [0, num_classes]; num_classes is the null label.</param>
    /// <param name="grid">Rows and columns of the token grid; when null, a square grid is assumed.</param>
    /// <param name="generator">Draws the label dropout in training mode.</param>
    /// <returns>[B, T, out_channels]; with learn_sigma the first in_channels are the velocity.</returns>
    public Tensor Forward(Tensor x, Tensor t, Tensor y, (int Height, int Width)? grid = null, Generator? generator = null)
    {
        if (x.dim() != 3 || x.shape[2] != Config.InChannels)
            throw new SvgdException($"DiT input must be tokens [B, T, {Config.InChannels}], got {Checkpoint.Shape(x.shape)}");
        long b = x.shape[0];
        var (h, w) = ResolveGrid(x.shape[1], grid);
        CheckLabels(y, b);
        using var scope = torch.NewDisposeScope();
        var tt = t.dim() == 0 ? t.expand(b) : t;
        if (tt.dim() != 1 || tt.shape[0] != b)
            throw new SvgdException($"DiT time must be a scalar or [{b}], got {Checkpoint.Shape(t.shape)}");
        var compute = ComputePrecision;
        var outer = t_embedder.Linears.First().weight!.dtype;
        var h0 = ln1.forward(x.to(compute)) + PositionTable(h, w, compute, x.device);
        var c = t_embedder.forward(tt.to(x.device)) + y_embedder.Forward(y.to(x.device), generator).to(outer);
        var cc = c.to(compute);
        foreach (var blk in blocks) h0 = blk.Forward(h0, cc);
        return final_layer.Forward(h0.to(outer), c).to(x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>Model output for latents [B, C, h, w]; returns [B, out_channels, h, w].</summary>
    public Tensor ForwardLatent(Tensor latent, Tensor t, Tensor y, Generator? generator = null)
    {
        if (latent.dim() != 4) throw new SvgdException($"DiT latent must be [B, {Config.InChannels}, h, w], got {Checkpoint.Shape(latent.shape)}");
        int h = (int)latent.shape[2], w = (int)latent.shape[3];
        using var scope = torch.NewDisposeScope();
        var o = Forward(LatentToTokens(latent), t, y, (h, w), generator);
        return TokensToLatent(o, h, w).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The velocity alone: the first in_channels output channels (the learn_sigma half is unused by
    /// rectified flow). Takes tokens [B, T, C] or latents [B, C, h, w] and answers in the same layout.
    /// </summary>
    public Tensor Velocity(Tensor x, Tensor t, Tensor y, (int Height, int Width)? grid = null, Generator? generator = null)
    {
        using var scope = torch.NewDisposeScope();
        Tensor v = x.dim() == 4
            ? ForwardLatent(x, t, y, generator).narrow(1, 0, Config.InChannels)
            : Forward(x, t, y, grid, generator).narrow(2, 0, Config.InChannels);
        return v.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>[B, C, h, w] to row-major tokens [B, h*w, C].</summary>
    public static Tensor LatentToTokens(Tensor latent) =>
        latent.permute(0, 2, 3, 1).reshape(latent.shape[0], latent.shape[2] * latent.shape[3], latent.shape[1]);

    /// <summary>Row-major tokens [B, h*w, C] back to [B, C, h, w].</summary>
    public static Tensor TokensToLatent(Tensor tokens, int height, int width)
    {
        if (tokens.dim() != 3 || tokens.shape[1] != (long)height * width)
            throw new SvgdException($"tokens {Checkpoint.Shape(tokens.shape)} do not form a {height}x{width} grid");
        return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2).contiguous();
    }

    (int, int) ResolveGrid(long tokens, (int Height, int Width)? grid)
    {
        if (grid is { } g)
        {
            if ((long)g.Height * g.Width != tokens)
                throw new SvgdException($"DiT got {tokens} tokens, which is not a {g.Height}x{g.Width} grid");
            return (g.Height, g.Width);
        }
        int side = (int)Math.Round(Math.Sqrt(tokens));
        if ((long)side * side != tokens)
            throw new SvgdException($"DiT got {tokens} tokens, which is not a square grid; pass the grid size (or latents [B, C, h, w])");
        return (side, side);
    }

    void CheckLabels(Tensor y, long batch)
    {
        if (y.dim() != 1 || y.shape[0] != batch)
            throw new SvgdException($"DiT labels must be [{batch}], got {Checkpoint.Shape(y.shape)}");
        if (batch == 0) return;
        using var min = y.min();
        using var max = y.max();
        long lo = min.item<long>(), hi = max.item<long>();
        int rows = Config.EmbeddingRows;
        if (lo < 0 || hi >= rows)
            throw new SvgdException($"DiT labels must be in [0, {rows - 1}]{(Config.HasNullClass ? $" ({NullLabel} = null label)" : "")}, got {lo}..{hi}");
    }

    /// <summary>[1, h*w, hidden]: the stored table for the configured grid, else a computed one.</summary>
    Tensor PositionTable(int h, int w, ScalarType dtype, Device device)
    {
        if (h == Config.InputSize && w == Config.InputSize) return pos_embed.to(dtype, device);
        if (!_otherGrids.TryGetValue((h, w), out var table))
        {
            table = SinCosPositionEmbedding.Create(Config.HiddenSize, h, w).unsqueeze(0);
            table.DetachFromDisposeScope();
            _otherGrids[(h, w)] = table;
        }
        return table.to(dtype, device);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var t in _otherGrids.Values) t.Dispose();
            _otherGrids.Clear();
        }
        base.Dispose(disposing);
    }
}
