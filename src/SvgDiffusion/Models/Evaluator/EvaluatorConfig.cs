namespace SvgDiffusion.Models.Evaluator;

/// <summary>
/// Architecture of the evaluation classifier: stages of 3x3 conv + batch norm + ReLU blocks at
/// <c>channels[i]</c> width, each stage ending in a 2x2 max-pool, then the flattened map through a
/// hidden linear layer + batch norm + ReLU (the feature vector the distances use) and a linear head.
/// Flattening keeps where things are in the picture, which global pooling would discard.
/// </summary>
public sealed record EvaluatorConfig
{
    public int ImageSize { get; init; } = 32;
    /// <summary>1: the network sees luminance (the mean of RGB), so a tint does not change a class (Fashion-MNIST's);
    /// 3: it sees colour, for data whose colour is part of what is judged (the emoji evaluator).</summary>
    public int InputChannels { get; init; } = 1;
    public int[] Channels { get; init; } = { 32, 64, 128 };
    /// <summary>Conv blocks per stage.</summary>
    public int[] Blocks { get; init; } = { 1, 1, 1 };
    public int NumClasses { get; init; } = 10;
    /// <summary>Width of the hidden layer: the feature dimension.</summary>
    public int Hidden { get; init; } = 256;
    /// <summary>Dropout before the head, in training only.</summary>
    public double Dropout { get; init; } = 0.3;

    [System.Text.Json.Serialization.JsonIgnore] public int FeatureDim => Hidden;
    /// <summary>Side of the map after the last pooling.</summary>
    [System.Text.Json.Serialization.JsonIgnore] public int FinalSize => ImageSize >> Channels.Length;

    public EvaluatorConfig Validate(string source)
    {
        if (Channels.Length == 0 || Channels.Length != Blocks.Length)
            throw new SvgdException($"{source}: evaluator channels and blocks must be non-empty lists of equal length");
        if (Channels.Any(c => c <= 0) || Blocks.Any(b => b <= 0) || NumClasses < 2 || Hidden <= 0)
            throw new SvgdException($"{source}: evaluator channels, blocks and hidden must be positive and num_classes at least 2");
        if (ImageSize <= 0 || ImageSize % (1 << Channels.Length) != 0)
            throw new SvgdException($"{source}: evaluator image_size {ImageSize} must be a positive multiple of {1 << Channels.Length} ({Channels.Length} pooling stages)");
        if (InputChannels is not (1 or 3)) throw new SvgdException($"{source}: evaluator input_channels must be 1 (grey) or 3 (colour), not {InputChannels}");
        if (Dropout is < 0 or >= 1) throw new SvgdException($"{source}: evaluator dropout must be in [0, 1)");
        return this;
    }
}
