using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Config;
using SvgDiffusion.Models.Encoders;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.ResNet;

/// <summary>
/// ML.NET's ImageNet ResNet-18 (NuGet Microsoft.ML.DnnImageFeaturizer.ResNet18) as SVG's frozen semantic
/// encoder. ImageNet-normalised RGB [B, 3, H, W] is turned back into RGB 0-255, put through the package's
/// preprocessing (<see cref="ResNet18Preprocess"/>: BGR minus the mean image) and the network up to the stage
/// <see cref="ResNet18Config.Stage"/> picks; the patch tokens are that stage's grid, row-major, and the global
/// token is the same grid's average (at stage 32 and 224x224, the ONNX model's own 512-d output).
/// State dict: <c>preprocess.mean_image</c> and <c>backbone.*</c> (<see cref="ResNet18"/>'s torchvision names,
/// layers past the stage omitted). Frozen: parameters need no gradient and BatchNorm always uses its
/// running statistics, so <c>train()</c> changes nothing.
/// </summary>
public sealed class ResNet18Encoder : nn.Module, IFrozenEncoder
{
    public const string ConfigMetadataKey = "svgd.resnet18_config";

    public ResNet18Config Config { get; }

    readonly ResNet18Preprocess preprocess;
    readonly ResNet18 backbone;

    /// <summary>An encoder with untrained weights; see <see cref="FromOnnx"/> and <see cref="Load"/>.</summary>
    public ResNet18Encoder(ResNet18Config? config = null) : base("ResNet18Encoder")
    {
        Config = (config ?? new ResNet18Config()).Validate("ResNet-18 encoder config");
        preprocess = new ResNet18Preprocess(Config.Mean);
        backbone = new ResNet18(Config.Layers);
        RegisterComponents();
        foreach (var p in parameters()) p.requires_grad = false;
        eval();
    }

    public ResNet18Preprocess Preprocess => preprocess;
    public ResNet18 Backbone => backbone;

    public string Kind => "resnet18";
    public int FeatureDim => Config.FeatureDim;
    public int Stride => Config.Stage;

    /// <summary>ImageNet-normalised RGB -> RGB in 0-255 (what the ML.NET featurizer is fed).</summary>
    public static Tensor ToRgb255(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        var shape = new long[] { 1, 3, 1, 1 };
        var mean = torch.tensor(Data.Preprocessing.ImageNetMean).view(shape).to(images.dtype, images.device);
        var std = torch.tensor(Data.Preprocessing.ImageNetStd).view(shape).to(images.dtype, images.device);
        return ((images * std + mean) * 255.0).MoveToOuterDisposeScope();
    }

    void CheckInput(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new SvgdException($"ResNet-18 encoder input must be [B, 3, H, W], got {Checkpoint.Shape(images.shape)}");
        long h = images.shape[2], w = images.shape[3];
        if (h < Stride || w < Stride || h % Stride != 0 || w % Stride != 0)
            throw new SvgdException($"ResNet-18 encoder input {h}x{w} is not a positive multiple of the stride {Stride} (stage {Config.Stage})");
    }

    /// <summary>ImageNet-normalised RGB -> the ResNet18.onnx input (BGR 0-255 minus the mean).</summary>
    public Tensor NetworkInput(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        return preprocess.Forward(ToRgb255(images)).MoveToOuterDisposeScope();
    }

    /// <summary>The chosen stage's grid, [B, D, H/s, W/s].</summary>
    public Tensor FeatureMap(Tensor images)
    {
        CheckInput(images);
        using var scope = torch.NewDisposeScope();
        return backbone.forward(NetworkInput(images)).MoveToOuterDisposeScope();
    }

    public FrozenFeatures Encode(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        var map = FeatureMap(images);
        int h = (int)map.shape[2], w = (int)map.shape[3];
        var patch = map.flatten(2).transpose(1, 2).contiguous();
        var global = map.mean(new long[] { 2, 3 });
        return new FrozenFeatures(patch.MoveToOuterDisposeScope(), global.MoveToOuterDisposeScope(), h, w);
    }

    /// <summary>The package's pretrained encoder, from its two ONNX files (by default those in the output directory).</summary>
    public static ResNet18Encoder FromOnnx(ResNet18Config? config = null, string? modelPath = null, string? preprocessPath = null)
    {
        modelPath ??= ResNet18Onnx.DefaultModelPath;
        preprocessPath ??= ResNet18Onnx.DefaultPreprocessPath;
        var encoder = new ResNet18Encoder(config);
        var sd = new Dictionary<string, Tensor>();
        try
        {
            using (var mean = ResNet18Onnx.ReadMeanImage(preprocessPath))
            {
                if (!mean.shape.SequenceEqual(new long[] { 1, 3, ResNet18Preprocess.MeanSize, ResNet18Preprocess.MeanSize }))
                    throw new SvgdException($"{preprocessPath}: mean image is {Checkpoint.Shape(mean.shape)}, expected [1, 3, 224, 224]");
                sd["preprocess.mean_image"] = mean.clone();
            }
            foreach (var (k, v) in ResNet18Onnx.ReadWeights(modelPath)) sd["backbone." + k] = v;
            StateDictLoader.Load(encoder, sd, modelPath, k => ResNet18Onnx.LayerOf(k["backbone.".Length..]) > encoder.Config.Layers);
        }
        catch { encoder.Dispose(); throw; }
        finally { foreach (var t in sd.Values) t.Dispose(); }
        return encoder;
    }

    /// <summary>
    /// Weights saved by <see cref="Save"/> (or any checkpoint container with the same keys); a <c>.onnx</c> path
    /// is read as the package's ResNet18.onnx with the default preprocessing file. The config comes from
    /// <paramref name="config"/>, else the file's metadata, else the defaults. Deeper layers in the file
    /// than the stage needs are ignored.
    /// </summary>
    public static ResNet18Encoder Load(string path, ResNet18Config? config = null)
    {
        if (path.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)) return FromOnnx(config, path);
        var ckpt = Checkpoint.Open(path);
        config ??= ckpt.Metadata.TryGetValue(ConfigMetadataKey, out var json)
            ? ConfigJson.ParseText<ResNet18Config>(json, $"{path} metadata")
            : null;
        var encoder = new ResNet18Encoder(config);
        var sd = ckpt.StateDict();
        try
        {
            StateDictLoader.Load(encoder, sd, path,
                k => k.StartsWith("backbone.", StringComparison.Ordinal) && ResNet18Onnx.LayerOf(k["backbone.".Length..]) > encoder.Config.Layers);
        }
        catch { encoder.Dispose(); throw; }
        finally { foreach (var t in sd.Values) t.Dispose(); }
        return encoder;
    }

    /// <summary>Writes the state dict as safetensors, with the config in the metadata.</summary>
    public void Save(string path) =>
        SafeTensors.Save(path, state_dict(), new Dictionary<string, string>
        {
            [ConfigMetadataKey] = ConfigJson.Serialize(Config),
            ["svgd.encoder_kind"] = Kind,
        });
}
