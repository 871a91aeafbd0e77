using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.ResNet;

/// <summary>
/// BatchNorm with fixed statistics: always normalises with the running mean and variance, whatever
/// <c>train()</c>/<c>eval()</c> says, so a frozen encoder inside a module being trained cannot drift.
/// State dict entries are torchvision's (<c>weight</c>, <c>bias</c>, <c>running_mean</c>, <c>running_var</c>),
/// without <c>num_batches_tracked</c>.
/// </summary>
public sealed class FrozenBatchNorm2d : Module<Tensor, Tensor>
{
    public double Eps { get; }

    public FrozenBatchNorm2d(long channels, double eps = 1e-5) : base("FrozenBatchNorm2d")
    {
        Eps = eps;
        register_parameter("weight", new Parameter(torch.ones(channels)));
        register_parameter("bias", new Parameter(torch.zeros(channels)));
        register_buffer("running_mean", torch.zeros(channels));
        register_buffer("running_var", torch.ones(channels));
    }

    public override Tensor forward(Tensor x) =>
        nn.functional.batch_norm(x, get_buffer("running_mean")!, get_buffer("running_var")!,
            get_parameter("weight")!, get_parameter("bias")!, training: false, eps: Eps);
}

/// <summary>
/// Zero padding as the CNTK export of the ML.NET ResNet-18 has it: symmetric for stride-1 layers, and for
/// stride-2 layers <c>k/2</c> before but one less after (conv1 7x7: 3 and 2; 3x3 convs and the max pool: 1 and 0).
/// At even input sizes this equals torchvision's symmetric padding exactly; at odd sizes the last output row
/// and column of the symmetric version (which only the extra end padding reaches) are not produced.
/// </summary>
public readonly record struct CntkPads(int Begin, int End)
{
    public static CntkPads For(int kernel, int stride) =>
        stride == 1 ? new(kernel / 2, kernel / 2) : new(kernel / 2, Math.Max(0, kernel / 2 - 1));

    /// <summary>ONNX <c>pads</c> of a 2-D op: [top, left, bottom, right].</summary>
    public long[] Onnx => new long[] { Begin, Begin, End, End };

    public static long OutputSize(long input, int kernel, int stride, CntkPads pads) =>
        (input + pads.Begin + pads.End - kernel) / stride + 1;

    /// <summary>
    /// <paramref name="y"/> computed with symmetric padding <see cref="Begin"/> cropped to what padding
    /// (<see cref="Begin"/>, <see cref="End"/>) gives: the windows start at the same places, the symmetric
    /// version only has at most one more at the end.
    /// </summary>
    public Tensor Crop(Tensor y, long inH, long inW, int kernel, int stride)
    {
        long h = OutputSize(inH, kernel, stride, this), w = OutputSize(inW, kernel, stride, this);
        if (y.shape[2] == h && y.shape[3] == w) return y;
        return y.narrow(2, 0, h).narrow(3, 0, w);
    }
}

/// <summary>torchvision's BasicBlock: two 3x3 convs with BatchNorm, identity or 1x1-conv shortcut.</summary>
public sealed class BasicBlock : Module<Tensor, Tensor>
{
    readonly ConvLayer conv1;
    readonly FrozenBatchNorm2d bn1;
    readonly ConvLayer conv2;
    readonly FrozenBatchNorm2d bn2;
    readonly Sequential? downsample;

    public int Stride { get; }

    public BasicBlock(long inChannels, long channels, int stride) : base("BasicBlock")
    {
        Stride = stride;
        conv1 = new ConvLayer(inChannels, channels, 3, stride: stride, padding: 1, bias: false);
        bn1 = new FrozenBatchNorm2d(channels);
        conv2 = new ConvLayer(channels, channels, 3, stride: 1, padding: 1, bias: false);
        bn2 = new FrozenBatchNorm2d(channels);
        if (stride != 1 || inChannels != channels)
            downsample = Sequential(("0", new ConvLayer(inChannels, channels, 1, stride: stride, bias: false)), ("1", new FrozenBatchNorm2d(channels)));
        RegisterComponents();
    }

    public bool HasDownsample => downsample != null;

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var y = CntkPads.For(3, Stride).Crop(conv1.forward(x), x.shape[2], x.shape[3], 3, Stride);
        y = bn1.forward(y).relu_();
        y = bn2.forward(conv2.forward(y));
        var identity = downsample?.forward(x) ?? x;
        // An odd input to a stride-2 block: the 1x1 shortcut has one row/column more than the main path
        // (the ONNX graph cannot add them there); both start at input 0 with step 2, so drop the shortcut's extra one.
        if (identity.shape[2] != y.shape[2] || identity.shape[3] != y.shape[3])
            identity = identity.narrow(2, 0, y.shape[2]).narrow(3, 0, y.shape[3]);
        return (y + identity).relu_().MoveToOuterDisposeScope();
    }
}

/// <summary>
/// ML.NET's ImageNet ResNet-18 (torchvision parameter names: <c>conv1</c>, <c>bn1</c>, <c>layer1.0.conv1</c>, ...,
/// <c>layer2.0.downsample.0</c>), with the CNTK export's padding (<see cref="CntkPads"/>) so that it reproduces
/// the ONNX file of Microsoft.ML.DnnImageFeaturizer.ResNet18 (<see cref="FromOnnx"/>). Runs at any input size
/// and batch size. As in that file, layer4 has three BasicBlocks (<see cref="Blocks"/>). There is no classifier: the ONNX model ends at the 512-d average pool.
/// The constructor's <c>layers</c> builds only <c>layer1</c>..<c>layerN</c>, for encoders that stop early.
/// Input: the ONNX model's, i.e. BGR 0-255 minus the mean image (<see cref="ResNet18Preprocess"/>).
/// </summary>
public sealed class ResNet18 : Module<Tensor, Tensor>
{
    public static readonly int[] Channels = { 64, 128, 256, 512 };
    /// <summary>
    /// BasicBlocks per stage. The CNTK model has three in layer4 (9 blocks, 22 convs, 15.9M parameters),
    /// one more than torchvision's ResNet-18 ([2, 2, 2, 2]); it is kept, since the weights are trained with it.
    /// </summary>
    public static readonly int[] Blocks = { 2, 2, 2, 3 };

    readonly ConvLayer conv1;
    readonly FrozenBatchNorm2d bn1;
    readonly ModuleList<BasicBlock>[] layers;

    /// <summary>How many residual stages (layer1..layerN) are built, 1 to 4.</summary>
    public int Layers => layers.Length;

    public ResNet18(int layers = 4) : base("ResNet18")
    {
        if (layers is < 1 or > 4) throw new SvgdException($"ResNet-18 has 4 residual stages; cannot build {layers}");
        conv1 = new ConvLayer(3, 64, 7, stride: 2, padding: 3, bias: false);
        bn1 = new FrozenBatchNorm2d(64);
        RegisterComponents();
        this.layers = new ModuleList<BasicBlock>[layers];
        long inCh = 64;
        for (int i = 0; i < layers; i++)
        {
            int stride = i == 0 ? 1 : 2;
            this.layers[i] = new ModuleList<BasicBlock>(Enumerable.Range(0, Blocks[i])
                .Select(b => b == 0 ? new BasicBlock(inCh, Channels[i], stride) : new BasicBlock(Channels[i], Channels[i], 1)).ToArray());
            register_module($"layer{i + 1}", this.layers[i]);
            inCh = Channels[i];
        }
    }

    /// <summary>Pixels per cell of <c>layerN</c>'s grid (4, 8, 16, 32).</summary>
    public static int StrideOf(int layer) => 2 << layer;

    /// <summary>conv1, bn1, relu, 3x3/2 max pool: [B, 64, H/4, W/4] for sides that are multiples of 4.</summary>
    public Tensor Stem(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] != 3)
            throw new SvgdException($"ResNet-18 input must be [B, 3, H, W], got {Checkpoints.Checkpoint.Shape(x.shape)}");
        using var scope = torch.NewDisposeScope();
        var y = CntkPads.For(7, 2).Crop(conv1.forward(x), x.shape[2], x.shape[3], 7, 2);
        y = bn1.forward(y).relu_();
        // Padding never wins the max: the input is post-ReLU, and every window holds real values.
        var p = nn.functional.max_pool2d(y, new long[] { 3, 3 }, new long[] { 2, 2 }, new long[] { 1, 1 });
        return CntkPads.For(3, 2).Crop(p, y.shape[2], y.shape[3], 3, 2).MoveToOuterDisposeScope();
    }

    /// <summary>Outputs of <c>layer1</c>..<c>layerN</c> (N = <paramref name="upTo"/>, default all built).</summary>
    public Tensor[] ForwardStages(Tensor x, int? upTo = null)
    {
        int n = upTo ?? Layers;
        if (n < 1 || n > Layers) throw new SvgdException($"stage {n} is not built (this ResNet-18 has layer1..layer{Layers})");
        using var scope = torch.NewDisposeScope();
        var outs = new Tensor[n];
        var y = Stem(x);
        for (int i = 0; i < n; i++)
        {
            foreach (var block in layers[i]) y = block.forward(y);
            outs[i] = y;
        }
        foreach (var o in outs) o.MoveToOuterDisposeScope();
        return outs;
    }

    /// <summary>The last built stage, [B, C, H/s, W/s].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var outs = ForwardStages(x);
        return outs[^1].MoveToOuterDisposeScope();
    }

    /// <summary>Global average of the last built stage, [B, C]: with all 4 stages at 224x224 the ONNX model's output (its 7x7 average pool) flattened.</summary>
    public Tensor Pooled(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        return forward(x).mean(new long[] { 2, 3 }).MoveToOuterDisposeScope();
    }

    /// <summary>Reads the weights of a ResNet-18 ONNX file (by default the NuGet package's) into a new model.</summary>
    public static ResNet18 FromOnnx(string? path = null, int layers = 4)
    {
        path ??= ResNet18Onnx.DefaultModelPath;
        var sd = ResNet18Onnx.ReadWeights(path);
        try
        {
            var model = new ResNet18(layers);
            Checkpoints.StateDictLoader.Load(model, sd, path, k => ResNet18Onnx.LayerOf(k) > layers);
            model.eval();
            return model;
        }
        finally { foreach (var t in sd.Values) t.Dispose(); }
    }
}
