using System.Text.Json.Serialization;

namespace SvgDiffusion.Models.ResNet;

/// <summary>The ResNet-18 frozen encoder's options (JSON: <c>stage</c>, <c>mean</c>).</summary>
public sealed record ResNet18Config
{
    /// <summary>Stride of the feature grid, which picks the stage: 8 (layer2, 128 ch), 16 (layer3, 256 ch) or 32 (layer4, 512 ch).</summary>
    public int Stage { get; init; } = 16;

    /// <summary>
    /// How the 224x224 mean image of the package's preprocessing is applied at other sizes: <c>image</c> (resized
    /// to the input; exactly the ONNX graph at 224) or <c>channel</c> (its per-channel averages at every size).
    /// </summary>
    public string Mean { get; init; } = "image";

    /// <summary>Residual stages run: 2, 3 or 4.</summary>
    [JsonIgnore] public int Layers => Stage switch { 8 => 2, 16 => 3, 32 => 4, _ => throw new SvgdException($"ResNet-18 stage must be 8, 16 or 32, not {Stage}") };

    [JsonIgnore] public int FeatureDim => ResNet18.Channels[Layers - 1];

    public ResNet18Config Validate(string source)
    {
        if (Stage is not (8 or 16 or 32))
            throw new SvgdException($"{source}: ResNet-18 stage must be 8 (layer2, 128 ch), 16 (layer3, 256 ch) or 32 (layer4, 512 ch), not {Stage}");
        if (Mean is not ("image" or "channel"))
            throw new SvgdException($"{source}: ResNet-18 mean must be 'image' or 'channel', not '{Mean}'");
        return this;
    }
}
