using System.Text.Json.Serialization;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Hyper-parameters of the SVG diffusion transformer under the reference's names (the <c>model</c>
/// section of its configs: <c>input_size</c>, <c>hidden_size</c>, <c>num_heads</c>, ...). Defaults are SVG-XL.
/// </summary>
public sealed record DiTConfig
{
    /// <summary>Side of the latent grid the stored position table is laid out for; other grids get a computed table.</summary>
    public int InputSize { get; init; } = 16;
    /// <summary>Always 1 in SVG: each latent position is a token, projected by the linear <c>ln1</c>.</summary>
    public int PatchSize { get; init; } = 1;
    /// <summary>Latent channels (392 = 384 DINOv3 + 8 residual for the released autoencoder).</summary>
    public int InChannels { get; init; } = 392;
    public int HiddenSize { get; init; } = 1152;
    public int Depth { get; init; } = 28;
    public int NumHeads { get; init; } = 16;
    public double MlpRatio { get; init; } = 4.0;
    /// <summary>Training only: chance a label is replaced by the null class, which is what makes classifier-free guidance possible.</summary>
    public double ClassDropoutProb { get; init; } = 0.1;
    public int NumClasses { get; init; } = 1000;
    /// <summary>Doubles the output channels as DiT does for a variance head; rectified flow only uses the first half (the velocity).</summary>
    public bool LearnSigma { get; init; } = true;
    /// <summary>LayerNorm on queries and keys per head, which keeps attention logits bounded in long training runs.</summary>
    public bool QkNorm { get; init; } = true;

    [JsonIgnore] public int OutChannels => LearnSigma ? InChannels * 2 : InChannels;
    [JsonIgnore] public int HeadDim => HiddenSize / NumHeads;
    [JsonIgnore] public int MlpHidden => (int)(HiddenSize * MlpRatio);
    [JsonIgnore] public int NumTokens => InputSize / PatchSize * (InputSize / PatchSize);
    /// <summary>The null label: index <see cref="NumClasses"/>, present when labels can be dropped.</summary>
    [JsonIgnore] public bool HasNullClass => ClassDropoutProb > 0;
    [JsonIgnore] public int EmbeddingRows => NumClasses + (HasNullClass ? 1 : 0);

    public DiTConfig Validate(string source)
    {
        if (InputSize <= 0 || InChannels <= 0 || HiddenSize <= 0 || Depth <= 0 || NumHeads <= 0 || NumClasses <= 0)
            throw new SvgdException($"{source}: input_size, in_channels, hidden_size, depth, num_heads and num_classes must be positive");
        if (PatchSize != 1)
            throw new SvgdException($"{source}: patch_size {PatchSize} is not supported: the SVG DiT embeds every latent position with the linear ln1 (patch_size 1)");
        if (HiddenSize % NumHeads != 0) throw new SvgdException($"{source}: hidden_size {HiddenSize} is not divisible by num_heads {NumHeads}");
        // The 2-D sin-cos table splits the width into four sin/cos halves of the row and column codes.
        if (HiddenSize % 4 != 0) throw new SvgdException($"{source}: hidden_size {HiddenSize} must be a multiple of 4 for the 2-D sin-cos position embedding");
        if (MlpRatio <= 0 || MlpHidden <= 0) throw new SvgdException($"{source}: mlp_ratio must be positive");
        if (ClassDropoutProb is < 0 or >= 1) throw new SvgdException($"{source}: class_dropout_prob must be in [0, 1)");
        return this;
    }
}
