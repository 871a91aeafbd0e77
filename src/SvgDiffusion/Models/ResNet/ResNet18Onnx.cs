using SvgDiffusion.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.ResNet;

/// <summary>
/// The two ONNX files of the NuGet package Microsoft.ML.DnnImageFeaturizer.ResNet18 (ML.NET's ImageNet
/// ResNet-18 featurizer, a CNTK 2.6 export, opset 8), which the build copies to <c>DnnImageModels/</c> in
/// the output directory, and their translation into <see cref="ResNet18"/> and <see cref="ResNet18Preprocess"/>.
/// <para><c>ResNet18.onnx</c>: input [1, 3, 224, 224] -> Conv 7x7/2 (pads 3,3,2,2), BatchNormalization, Relu,
/// MaxPool 3x3/2 (pads 1,1,0,0) -> 2, 2, 2 and 3 BasicBlocks in stages 1-4 (note: 3 in layer4, one more than
/// torchvision's ResNet-18; each Conv, BatchNormalization, Relu, Conv, BatchNormalization,
/// Add, Relu; stride-2 3x3 convs padded 1,1,0,0; 1x1/2 Conv + BatchNormalization shortcuts in the first block of
/// stages 2-4) -> AveragePool 7x7 -> [1, 512, 1, 1]. 22 Conv (no bias), 22 BatchNormalization (epsilon 1e-5),
/// 19 Relu, 9 Add, 1 MaxPool, 1 AveragePool; 110 float initializers (packed float_data), 15.9M parameters.</para>
/// <para><c>ResNetPreprocess.onnx</c>: RGB 0-255 [1, 3, 224, 224] -> Split into R, G, B -> Concat as B, G, R ->
/// Sub of the mean image <c>MeanImage</c> [1, 3, 224, 224] (BGR, spatially varying, channel means about
/// 103.1, 115.9, 123.2).</para>
/// </summary>
public static class ResNet18Onnx
{
    public const string PackageId = "Microsoft.ML.DnnImageFeaturizer.ResNet18";
    public const string ModelRelativePath = "DnnImageModels/ResNet18Onnx/ResNet18.onnx";
    public const string PreprocessRelativePath = "DnnImageModels/ResNetPrepOnnx/ResNetPreprocess.onnx";

    /// <summary>ResNet18.onnx in the application's output directory.</summary>
    public static string DefaultModelPath => Path.Combine(AppContext.BaseDirectory, ModelRelativePath);
    /// <summary>ResNetPreprocess.onnx in the application's output directory.</summary>
    public static string DefaultPreprocessPath => Path.Combine(AppContext.BaseDirectory, PreprocessRelativePath);

    static OnnxModel Open(string path)
    {
        if (!File.Exists(path))
        {
            bool isDefault = Path.GetFullPath(path) == Path.GetFullPath(DefaultModelPath) || Path.GetFullPath(path) == Path.GetFullPath(DefaultPreprocessPath);
            throw new SvgdException(isDefault
                ? $"{path}: no such ONNX file (the build copies it from the NuGet package {PackageId}; rebuild the project)"
                : $"{path}: no such ONNX file");
        }
        return OnnxModel.Load(path);
    }

    /// <summary>The residual stage (1-4) a state-dict key belongs to; 0 for the stem.</summary>
    public static int LayerOf(string key) =>
        key.StartsWith("layer", StringComparison.Ordinal) && key.Length > 5 && char.IsDigit(key[5]) ? key[5] - '0' : 0;

    /// <summary>
    /// The weights of a ResNet-18 ONNX file under <see cref="ResNet18"/>'s (torchvision's) names. The graph is
    /// walked from its input and every node is checked against the architecture, padding included, so any
    /// other network or export is refused with the node at fault named.
    /// </summary>
    public static Dictionary<string, Tensor> ReadWeights(string path)
    {
        var model = Open(path);
        var sd = new Dictionary<string, Tensor>();
        try
        {
            new Walker(model.Graph, path, sd).Run();
            return sd;
        }
        catch
        {
            foreach (var t in sd.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The mean image of a ResNetPreprocess ONNX file, [1, 3, H, W] in BGR order as stored, after checking the
    /// graph is the RGB -> BGR swap followed by the subtraction.
    /// </summary>
    public static Tensor ReadMeanImage(string path)
    {
        var g = Open(path).Graph;
        string Where(OnnxNode n) => $"{path}: node {n} of the preprocessing graph";
        var input = GraphInput(g, path);
        var nodes = g.Nodes;
        if (nodes.Count != 3 || nodes[0].OpType != "Split" || nodes[1].OpType != "Concat" || nodes[2].OpType != "Sub")
            throw new SvgdException($"{path}: not the ResNet preprocessing graph (expected Split, Concat, Sub; found {string.Join(", ", nodes.Select(n => n.OpType))})");
        var (split, concat, sub) = (nodes[0], nodes[1], nodes[2]);
        if (split.Inputs.Count != 1 || split.Inputs[0] != input || split.Int("axis", 0) != 1 || split.Outputs.Count != 3)
            throw new SvgdException($"{Where(split)}: expected a split of the input into its 3 channels");
        if (split.Attributes.ContainsKey("split") && !split.Ints("split", Array.Empty<long>()).SequenceEqual(new long[] { 1, 1, 1 }))
            throw new SvgdException($"{Where(split)}: expected split [1, 1, 1]");
        if (concat.Int("axis", 0) != 1 || !concat.Inputs.SequenceEqual(split.Outputs.Reverse()))
            throw new SvgdException($"{Where(concat)}: expected the channels concatenated in reverse (RGB -> BGR)");
        if (sub.Inputs.Count != 2 || sub.Inputs[0] != concat.Outputs[0] || !g.Initializers.TryGetValue(sub.Inputs[1], out var mean))
            throw new SvgdException($"{Where(sub)}: expected the BGR image minus an initializer");
        if (mean.DataType != OnnxTensor.Float || mean.Dims.Length != 4 || mean.Dims[0] != 1 || mean.Dims[1] != 3)
            throw new SvgdException($"{path}: mean image '{mean.Name}' must be float [1, 3, H, W], got [{string.Join(", ", mean.Dims)}] of type {mean.DataType}");
        return mean.ToTorch();
    }

    static string GraphInput(OnnxGraph g, string path)
    {
        var inputs = g.Inputs.Where(i => !g.Initializers.ContainsKey(i.Name)).ToList();
        if (inputs.Count != 1) throw new SvgdException($"{path}: expected one graph input, found {inputs.Count}");
        return inputs[0].Name;
    }

    /// <summary>Matches the node chain of a CNTK-exported ResNet-18 and collects its weights.</summary>
    sealed class Walker(OnnxGraph g, string path, Dictionary<string, Tensor> sd)
    {
        readonly HashSet<OnnxNode> seen = new();
        readonly Dictionary<string, List<OnnxNode>> consumers = Consumers(g);

        static Dictionary<string, List<OnnxNode>> Consumers(OnnxGraph g)
        {
            var d = new Dictionary<string, List<OnnxNode>>();
            foreach (var n in g.Nodes)
                foreach (var i in n.Inputs)
                {
                    if (!d.TryGetValue(i, out var l)) d[i] = l = new List<OnnxNode>();
                    l.Add(n);
                }
            return d;
        }

        IReadOnlyList<OnnxNode> Of(string value) => consumers.TryGetValue(value, out var l) ? l : Array.Empty<OnnxNode>();

        SvgdException Fail(string what) => new($"{path}: not the ResNet-18 this port reads: {what}");

        OnnxNode Next(string value, string op, string role)
        {
            var cands = Of(value).Where(n => n.OpType == op).ToList();
            if (cands.Count != 1)
                throw Fail($"expected one {op} ({role}) reading '{value}', found {cands.Count} (consumers: {string.Join(", ", Of(value).Select(n => n.ToString()))})");
            seen.Add(cands[0]);
            return cands[0];
        }

        Tensor Init(OnnxNode n, int input, string role)
        {
            if (input >= n.Inputs.Count || !g.Initializers.TryGetValue(n.Inputs[input], out var t))
                throw Fail($"node {n} ({role}): input {input} is not an initializer");
            if (t.DataType != OnnxTensor.Float) throw Fail($"initializer '{t.Name}' ({role}) is of type {t.DataType}, not float");
            return t.ToTorch();
        }

        static string Ints(long[] v) => "[" + string.Join(", ", v) + "]";

        void Conv(OnnxNode n, string name, int kernel, int stride)
        {
            if (n.Inputs.Count != 2) throw Fail($"node {n} ({name}) has {n.Inputs.Count} inputs; expected data and weight (no bias)");
            var pads = CntkPads.For(kernel, stride);
            void Check(string attr, long[] got, long[] want)
            {
                if (!got.SequenceEqual(want)) throw Fail($"node {n} ({name}): {attr} {Ints(got)}, expected {Ints(want)}");
            }
            Check("kernel_shape", n.Ints("kernel_shape", new long[] { kernel, kernel }), new long[] { kernel, kernel });
            Check("strides", n.Ints("strides", new long[] { 1, 1 }), new long[] { stride, stride });
            Check("pads", n.Ints("pads", new long[] { 0, 0, 0, 0 }), pads.Onnx);
            Check("dilations", n.Ints("dilations", new long[] { 1, 1 }), new long[] { 1, 1 });
            if (n.Int("group", 1) != 1) throw Fail($"node {n} ({name}): group {n.Int("group", 1)}, expected 1");
            if (n.Str("auto_pad", "NOTSET") != "NOTSET") throw Fail($"node {n} ({name}): auto_pad {n.Str("auto_pad", "")}, expected NOTSET");
            sd[name + ".weight"] = Init(n, 1, name + ".weight");
        }

        void BatchNorm(OnnxNode n, string name)
        {
            if (n.Inputs.Count != 5 || n.Outputs.Count < 1) throw Fail($"node {n} ({name}): expected inputs X, scale, B, mean, var");
            double eps = n.Float("epsilon", 1e-5);
            if (Math.Abs(eps - 1e-5) > 1e-9) throw Fail($"node {n} ({name}): epsilon {eps}, expected 1e-5");
            if (n.Int("spatial", 1) != 1) throw Fail($"node {n} ({name}): spatial {n.Int("spatial", 1)}, expected 1");
            sd[name + ".weight"] = Init(n, 1, name + ".weight");
            sd[name + ".bias"] = Init(n, 2, name + ".bias");
            sd[name + ".running_mean"] = Init(n, 3, name + ".running_mean");
            sd[name + ".running_var"] = Init(n, 4, name + ".running_var");
        }

        /// <summary>Conv -> BatchNormalization; returns the BN output.</summary>
        string ConvBn(OnnxNode conv, string convName, string bnName, int kernel, int stride)
        {
            Conv(conv, convName, kernel, stride);
            var bn = Next(conv.Outputs[0], "BatchNormalization", bnName);
            BatchNorm(bn, bnName);
            return bn.Outputs[0];
        }

        public void Run()
        {
            string x = GraphInput(g, path);
            var conv1 = Next(x, "Conv", "conv1");
            x = ConvBn(conv1, "conv1", "bn1", 7, 2);
            x = Next(x, "Relu", "relu").Outputs[0];
            var pool = Next(x, "MaxPool", "maxpool");
            var poolPads = CntkPads.For(3, 2).Onnx;
            if (!pool.Ints("kernel_shape", Array.Empty<long>()).SequenceEqual(new long[] { 3, 3 }) ||
                !pool.Ints("strides", Array.Empty<long>()).SequenceEqual(new long[] { 2, 2 }) ||
                !pool.Ints("pads", new long[] { 0, 0, 0, 0 }).SequenceEqual(poolPads) ||
                pool.Str("auto_pad", "NOTSET") != "NOTSET")
                throw Fail($"node {pool} (maxpool): expected kernel [3, 3], strides [2, 2], pads {Ints(poolPads)}; got kernel {Ints(pool.Ints("kernel_shape", Array.Empty<long>()))}, strides {Ints(pool.Ints("strides", Array.Empty<long>()))}, pads {Ints(pool.Ints("pads", Array.Empty<long>()))}");
            x = pool.Outputs[0];
            for (int layer = 1; layer <= 4; layer++)
                for (int block = 0; block < ResNet18.Blocks[layer - 1]; block++)
                    x = Block(x, $"layer{layer}.{block}", layer > 1 && block == 0 ? 2 : 1, layer > 1 && block == 0);
            // The head: a global average pool (7x7 at 224) is the graph output; nothing else may follow.
            var tail = Of(x);
            foreach (var n in tail)
            {
                if (n.OpType is not ("AveragePool" or "GlobalAveragePool")) throw Fail($"unexpected node {n} after layer4");
                seen.Add(n);
            }
            var unused = g.Nodes.Where(n => !seen.Contains(n)).ToList();
            if (unused.Count > 0) throw Fail($"{unused.Count} node(s) outside the ResNet-18 chain: {string.Join(", ", unused.Take(5))}");
            var used = g.Nodes.SelectMany(n => n.Inputs).ToHashSet();
            var extra = g.Initializers.Keys.Where(k => !used.Contains(k)).ToList();
            if (extra.Count > 0) throw Fail($"{extra.Count} unused initializer(s): {string.Join(", ", extra.Take(5))}");
        }

        string Block(string x, string p, int stride, bool downsample)
        {
            var convs = Of(x).Where(n => n.OpType == "Conv").ToList();
            var main = convs.Where(n => n.Ints("kernel_shape", Array.Empty<long>()).SequenceEqual(new long[] { 3, 3 })).ToList();
            var down = convs.Where(n => n.Ints("kernel_shape", Array.Empty<long>()).SequenceEqual(new long[] { 1, 1 })).ToList();
            if (main.Count != 1 || down.Count != (downsample ? 1 : 0) || convs.Count != main.Count + down.Count)
                throw Fail($"{p}: expected one 3x3 Conv{(downsample ? " and one 1x1 Conv (shortcut)" : "")} reading '{x}', found {string.Join(", ", convs.Select(n => $"{n} {Ints(n.Ints("kernel_shape", Array.Empty<long>()))}"))}");
            seen.Add(main[0]);
            var y = ConvBn(main[0], p + ".conv1", p + ".bn1", 3, stride);
            y = Next(y, "Relu", p + ".relu").Outputs[0];
            y = ConvBn(Next(y, "Conv", p + ".conv2"), p + ".conv2", p + ".bn2", 3, 1);
            var add = Next(y, "Add", p + " residual add");
            string shortcut = x;
            if (downsample)
            {
                seen.Add(down[0]);
                shortcut = ConvBn(down[0], p + ".downsample.0", p + ".downsample.1", 1, stride);
            }
            var others = add.Inputs.Where(i => i != y).ToList();
            if (add.Inputs.Count != 2 || others.Count != 1 || others[0] != shortcut)
                throw Fail($"node {add} ({p}): expected the sum of '{y}' and the shortcut '{shortcut}', got {string.Join(" + ", add.Inputs)}");
            return Next(add.Outputs[0], "Relu", p + ".relu (after add)").Outputs[0];
        }
    }
}
