using Microsoft.ML.OnnxRuntime;
using DenseTensor = Microsoft.ML.OnnxRuntime.Tensors.DenseTensor<float>;
using SvgDiffusion.Data;
using SvgDiffusion.Models.ResNet;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// Loaded once for the class: the stage-32 encoder read from the package's ONNX files, ONNX Runtime sessions on
/// the same files, and 224x224 RGB 0-255 test images (Fashion-MNIST upsampled, plus synthetic colour images).
/// </summary>
public sealed class ResNet18Fixture : IDisposable
{
    public ResNet18Encoder Encoder { get; }
    public InferenceSession Model { get; }
    public InferenceSession Prep { get; }
    /// <summary>[N, 3, 224, 224] RGB in 0-255.</summary>
    public Tensor Rgb255 { get; }
    /// <summary>The same, ImageNet-normalised (the encoder's input).</summary>
    public Tensor Normalised { get; }

    public ResNet18Fixture()
    {
        Encoder = ResNet18Encoder.FromOnnx(new ResNet18Config { Stage = 32 });
        Model = new InferenceSession(ResNet18Onnx.DefaultModelPath);
        Prep = new InferenceSession(ResNet18Onnx.DefaultPreprocessPath);
        using var scope = torch.NewDisposeScope();
        var pre = new Preprocessing(224, 224);
        var images = new List<Tensor>();
        foreach (var cls in new[] { "ankle-boot", "bag", "dress", "sandal", "t-shirt" })
        {
            string dir = Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist", cls);
            images.Add(pre.ResizeUnit(ImageFiles.LoadRgb(Directory.GetFiles(dir, "*.png").Order(StringComparer.Ordinal).First())) * 255.0);
        }
        var gen = new torch.Generator(7);
        var yy = torch.linspace(0, 1, 224).view(1, 224, 1).expand(1, 224, 224);
        var xx = torch.linspace(0, 1, 224).view(1, 1, 224).expand(1, 224, 224);
        // Colour gradients, smooth random colour blobs, and uniform noise: the full 0-255 range in every channel.
        images.Add(torch.cat(new[] { xx, yy, 1 - xx * yy }, 0) * 255.0);
        images.Add(nn.functional.interpolate(torch.rand(1, 3, 7, 7, generator: gen), new long[] { 224, 224 }, mode: InterpolationMode.Bicubic, align_corners: false).clamp(0, 1).squeeze(0) * 255.0);
        images.Add(torch.rand(3, 224, 224, generator: gen) * 255.0);
        Rgb255 = torch.stack(images).contiguous().MoveToOuterDisposeScope();
        Normalised = Preprocessing.Normalize(Rgb255 / 255.0).MoveToOuterDisposeScope();
    }

    /// <summary>Runs one [1, 3, 224, 224] image through an ONNX Runtime session (both graphs have fixed batch 1).</summary>
    public static Tensor Run(InferenceSession session, Tensor image)
    {
        var c = image.to(ScalarType.Float32).contiguous();
        var input = new DenseTensor(c.data<float>().ToArray(), c.shape.Select(d => (int)d).ToArray());
        using var results = session.Run(new[] { NamedOnnxValue.CreateFromTensor(session.InputMetadata.Keys.Single(), input) });
        var output = results.Single().AsTensor<float>();
        return torch.tensor(output.ToArray(), output.Dimensions.ToArray().Select(d => (long)d).ToArray());
    }

    public void Dispose()
    {
        Encoder.Dispose(); Model.Dispose(); Prep.Dispose(); Rgb255.Dispose(); Normalised.Dispose();
    }
}

public class ResNet18Tests(ResNet18Fixture fx, ITestOutputHelper log) : IClassFixture<ResNet18Fixture>
{
    static (double Abs, double Rel) Errors(Tensor actual, Tensor expected)
    {
        double abs = Reference.MaxAbs(actual, expected);
        using var scale = expected.abs().max();
        return (abs, abs / scale.item<float>());
    }

    [Fact]
    public void OnnxFilesAreInTheOutputDirectory()
    {
        Assert.True(File.Exists(ResNet18Onnx.DefaultModelPath), ResNet18Onnx.DefaultModelPath);
        Assert.True(File.Exists(ResNet18Onnx.DefaultPreprocessPath), ResNet18Onnx.DefaultPreprocessPath);
        var m = Checkpoints.OnnxModel.Load(ResNet18Onnx.DefaultModelPath);
        Assert.Equal("CNTK", m.ProducerName);
        Assert.Equal(8, m.Opsets[""]);
        Assert.Equal(110, m.Graph.Initializers.Count);
        Assert.Equal(22, m.Graph.Nodes.Count(n => n.OpType == "Conv"));
        Assert.Equal(22, m.Graph.Nodes.Count(n => n.OpType == "BatchNormalization"));
        Assert.Equal(new long?[] { 1, 3, 224, 224 }, m.Graph.Inputs.Single().Shape);
        Assert.Equal(new long?[] { 1, 512, 1, 1 }, m.Graph.Outputs.Single().Shape);
    }

    [Fact]
    public void PreprocessingMatchesOnnxRuntime()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var fromRgb = fx.Encoder.Preprocess.Forward(fx.Rgb255);
        var fromNormalised = fx.Encoder.NetworkInput(fx.Normalised);
        double worstExact = 0, worstRoundTrip = 0;
        for (int i = 0; i < fx.Rgb255.shape[0]; i++)
        {
            var expected = ResNet18Fixture.Run(fx.Prep, fx.Rgb255.narrow(0, i, 1));
            worstExact = Math.Max(worstExact, Reference.MaxAbs(fromRgb.narrow(0, i, 1), expected));
            worstRoundTrip = Math.Max(worstRoundTrip, Reference.MaxAbs(fromNormalised.narrow(0, i, 1), expected));
        }
        log.WriteLine($"preprocessing vs ONNX Runtime: max abs {worstExact:g3} from RGB 0-255, {worstRoundTrip:g3} from ImageNet-normalised input (values in about -130..160)");
        Assert.True(worstExact <= 1e-5, $"preprocessing differs from ONNX Runtime by {worstExact}");
        Assert.True(worstRoundTrip <= 1e-3, $"preprocessing of normalised input differs from ONNX Runtime by {worstRoundTrip}");
    }

    [Fact]
    public void FeaturesMatchOnnxRuntime()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        int n = (int)fx.Rgb255.shape[0];
        var prepped = new List<Tensor>();
        var expected = new List<Tensor>();
        for (int i = 0; i < n; i++)
        {
            var p = ResNet18Fixture.Run(fx.Prep, fx.Rgb255.narrow(0, i, 1));
            prepped.Add(p);
            expected.Add(ResNet18Fixture.Run(fx.Model, p).flatten(1));   // [1, 512, 1, 1] -> [1, 512]
        }
        var reference = torch.cat(expected, 0);
        // The network alone, on ONNX Runtime's own preprocessing output.
        var pooled = fx.Encoder.Backbone.Pooled(torch.cat(prepped, 0));
        var (abs, rel) = Errors(pooled, reference);
        log.WriteLine($"ResNet-18 pooled features [{n}, 512] vs ONNX Runtime: max abs {abs:g3}, relative to max |ref| {reference.abs().max().item<float>():g4}: {rel:g3}");
        Assert.True(rel <= 1e-4, $"network output differs from ONNX Runtime: max abs {abs}, relative {rel}");
        // The whole encoder from ImageNet-normalised input: the global token at stage 32.
        using var f = fx.Encoder.Encode(fx.Normalised);
        Assert.Equal(new long[] { n, 49, 512 }, f.Patch.shape);
        Assert.Equal((7, 7), (f.GridH, f.GridW));
        var (abs2, rel2) = Errors(f.Global!, reference);
        log.WriteLine($"encoder global token vs ONNX Runtime: max abs {abs2:g3}, relative {rel2:g3}");
        Assert.True(rel2 <= 1e-4, $"encoder output differs from ONNX Runtime: max abs {abs2}, relative {rel2}");
        // The patch grid averages to the global token, and the features are informative (not constant across images).
        Assert.True(Reference.MaxAbs(f.Patch.mean(new long[] { 1 }), f.Global!) <= 1e-5);
        Assert.True(reference.std(new long[] { 0 }).mean().item<float>() > 0.05f);
    }

    [Theory]
    [InlineData(8, 64, 64, 128, 8, 8)]
    [InlineData(16, 64, 64, 256, 4, 4)]
    [InlineData(32, 64, 64, 512, 2, 2)]
    [InlineData(16, 96, 160, 256, 6, 10)]
    [InlineData(8, 40, 24, 128, 5, 3)]
    public void StageGridsAtOtherSizes(int stage, int h, int w, int dim, int gh, int gw)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        using var enc = new ResNet18Encoder(new ResNet18Config { Stage = stage });
        Assert.Equal((stage, dim, "resnet18"), (enc.Stride, enc.FeatureDim, enc.Kind));
        using var f = enc.Encode(torch.randn(2, 3, h, w));
        Assert.Equal(new long[] { 2, gh * gw, dim }, f.Patch.shape);
        Assert.Equal(new long[] { 2, dim }, f.Global!.shape);
        Assert.Equal((gh, gw), (f.GridH, f.GridW));
        Assert.Throws<SvgdException>(() => enc.Encode(torch.randn(1, 3, h + stage / 2, w)));
    }

    [Fact]
    public void SafeTensorsRoundTripAndEarlierStages()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        string path = Path.Combine(Path.GetTempPath(), $"svgd-resnet18-{Guid.NewGuid():N}.safetensors");
        try
        {
            fx.Encoder.Save(path);
            var images = nn.functional.interpolate(fx.Normalised.narrow(0, 3, 3), new long[] { 128, 96 }, mode: InterpolationMode.Bilinear, align_corners: false);
            var stages = fx.Encoder.Backbone.ForwardStages(fx.Encoder.NetworkInput(images));
            using (var same = ResNet18Encoder.Load(path))
            {
                Assert.Equal(32, same.Config.Stage);
                Assert.True(Reference.MaxAbs(same.FeatureMap(images), stages[3]) == 0);
            }
            foreach (var (stage, layer) in new[] { (16, 2), (8, 1) })
            {
                // A stage-32 file loads into a shallower encoder (the deeper layers are ignored) and gives the same grid.
                using var enc = ResNet18Encoder.Load(path, new ResNet18Config { Stage = stage });
                Assert.Equal(stage, enc.Stride);
                Assert.DoesNotContain(enc.state_dict().Keys, k => k.StartsWith("backbone.layer4"));
                Assert.True(Reference.MaxAbs(enc.FeatureMap(images), stages[layer]) == 0);
                using var f = enc.Encode(images);
                Assert.Equal((128 / stage, 96 / stage), (f.GridH, f.GridW));
            }
            // The ONNX path gives the same encoder as the saved one.
            using var s16 = ResNet18Encoder.FromOnnx(new ResNet18Config { Stage = 16 });
            Assert.True(Reference.MaxAbs(s16.FeatureMap(images), stages[2]) == 0);
            // A shallower file cannot be loaded as a deeper encoder.
            string p16 = path + ".s16.safetensors";
            s16.Save(p16);
            try
            {
                var e = Assert.Throws<SvgdException>(() => ResNet18Encoder.Load(p16, new ResNet18Config { Stage = 32 }));
                Assert.Contains("missing", e.Message);
                using var back = ResNet18Encoder.Load(p16);
                Assert.Equal(16, back.Config.Stage);
            }
            finally { File.Delete(p16); }
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void BatchIndependentAndFrozen()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var images = fx.Normalised.narrow(0, 2, 4);
        using var all = fx.Encoder.Encode(images);
        double worst = 0;
        for (int i = 0; i < 4; i++)
        {
            using var one = fx.Encoder.Encode(images.narrow(0, i, 1));
            worst = Math.Max(worst, Reference.MaxAbs(one.Patch, all.Patch.narrow(0, i, 1)));
        }
        log.WriteLine($"batch of 4 vs one at a time: max abs {worst:g3}");
        Assert.True(worst <= 1e-4, $"batch dependence {worst}");
        Assert.All(fx.Encoder.parameters(), p => Assert.False(p.requires_grad));
        // BatchNorm keeps its running statistics in training mode: train() changes nothing.
        fx.Encoder.train();
        try
        {
            using var trained = fx.Encoder.Encode(images);
            Assert.True(Reference.MaxAbs(trained.Patch, all.Patch) == 0);
        }
        finally { fx.Encoder.eval(); }
    }

    [Fact]
    public void OtherSizesOfTheMeanImage()
    {
        using var scope = torch.NewDisposeScope();
        var prep = fx.Encoder.Preprocess;
        var mean = prep.MeanImage;
        Assert.Equal(new long[] { 1, 3, 224, 224 }, mean.shape);
        // Stored BGR: blue has the smallest mean (~103), red the largest (~123).
        var channel = mean.mean(new long[] { 0, 2, 3 });
        Assert.InRange(channel[0].item<float>(), 102f, 104f);
        Assert.InRange(channel[1].item<float>(), 115f, 117f);
        Assert.InRange(channel[2].item<float>(), 122f, 124f);
        Assert.True(Reference.MaxAbs(prep.MeanAt(224, 224), mean) == 0);
        Assert.Equal(new long[] { 1, 3, 64, 96 }, prep.MeanAt(64, 96).shape);
        Assert.True(Math.Abs(prep.MeanAt(64, 64).mean().item<float>() - mean.mean().item<float>()) < 0.5);
        using var chan = new ResNet18Preprocess("channel");
        chan.MeanImage.copy_(mean);
        Assert.Equal(new long[] { 1, 3, 1, 1 }, chan.MeanAt(64, 64).shape);
        Assert.True(Reference.MaxAbs(chan.MeanAt(224, 224).flatten(), channel) < 1e-4);
        // The config's JSON names.
        var cfg = Config.ConfigJson.Parse<ResNet18Config>(System.Text.Json.Nodes.JsonNode.Parse("""{"stage": 8, "mean": "channel"}"""), "test");
        Assert.Equal(new ResNet18Config { Stage = 8, Mean = "channel" }, cfg);
        Assert.Equal("""{"stage":16,"mean":"image"}""", Config.ConfigJson.Serialize(new ResNet18Config()));
        Assert.Throws<SvgdException>(() => new ResNet18Config { Stage = 12 }.Validate("test"));
        Assert.Throws<SvgdException>(() => new ResNet18Config { Mean = "pixel" }.Validate("test"));
    }

    [Fact]
    public void AnyResolutionForTheBareNetwork()
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        // Odd sizes (the CNTK padding gives floor sizes; the shortcut of a stride-2 block is cropped to the main path).
        var stages = fx.Encoder.Backbone.ForwardStages(torch.randn(1, 3, 75, 99));
        Assert.Equal(new long[] { 1, 64, 18, 24 }, stages[0].shape);
        Assert.Equal(new long[] { 1, 128, 9, 12 }, stages[1].shape);
        Assert.Equal(new long[] { 1, 256, 4, 6 }, stages[2].shape);
        Assert.Equal(new long[] { 1, 512, 2, 3 }, stages[3].shape);
    }

    /// <summary>
    /// The network at sizes other than 224 against ONNX Runtime, on a copy of ResNet18.onnx whose declared input
    /// shape is changed (ORT refuses other shapes otherwise): this checks the CNTK padding where it differs
    /// from symmetric padding (odd sizes). The graph ends in a 7x7/1 average pool, so we compare with that.
    /// </summary>
    [Theory]
    [InlineData(256, 256)]
    [InlineData(225, 257)]
    public void NetworkMatchesOnnxRuntimeAtOtherSizes(int h, int w)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        using var session = new InferenceSession(OnnxWithInputShape(File.ReadAllBytes(ResNet18Onnx.DefaultModelPath), h, w));
        var rgb = nn.functional.interpolate(fx.Rgb255.narrow(0, 4, 2), new long[] { h, w }, mode: InterpolationMode.Bilinear, align_corners: false);
        var input = rgb.flip(1) - torch.tensor(new float[] { 103f, 116f, 123f }).view(1, 3, 1, 1);
        var layer4 = fx.Encoder.Backbone.forward(input);
        var ours = nn.functional.avg_pool2d(layer4, new long[] { 7, 7 }, new long[] { 1, 1 });
        var reference = torch.cat(new[] { ResNet18Fixture.Run(session, input.narrow(0, 0, 1)), ResNet18Fixture.Run(session, input.narrow(0, 1, 1)) }, 0);
        var (abs, rel) = Errors(ours, reference);
        log.WriteLine($"{h}x{w}: layer4 {layer4.shape[2]}x{layer4.shape[3]}, ONNX output {Checkpoints.Checkpoint.Shape(reference.shape)}; max abs {abs:g3}, relative {rel:g3}");
        Assert.True(rel <= 1e-4, $"{h}x{w}: differs from ONNX Runtime: max abs {abs}, relative {rel}");
    }

    /// <summary>The model with input [1, 3, h, w], the output's shape left to inference and the intermediate value_info dropped.</summary>
    static byte[] OnnxWithInputShape(byte[] model, long h, long w)
    {
        var graph = Checkpoints.OnnxModel.Parse(model, "ResNet18.onnx").Graph;
        string inName = graph.Inputs.Single().Name, outName = graph.Outputs.Single().Name;
        static byte[] Tensor(params long[] dims)
        {
            var shape = dims.SelectMany(d => Field(1, Field(1, d))).ToArray();      // TensorShapeProto.dim { dim_value }
            var tensor = Field(1, 1L).Concat(dims.Length > 0 ? Field(2, shape) : Array.Empty<byte>()).ToArray();  // elem_type float, shape
            return Field(1, tensor);                                                 // TypeProto.tensor_type
        }
        static byte[] ValueInfo(string name, byte[] type) => Field(1, System.Text.Encoding.UTF8.GetBytes(name)).Concat(Field(2, type)).ToArray();
        var newGraph = new List<byte>();
        foreach (var (field, raw) in Fields(GraphBytes(model)))
        {
            if (field == 13) continue;
            if (field == 11) { newGraph.AddRange(Field(11, ValueInfo(inName, Tensor(1, 3, h, w)))); continue; }
            if (field == 12) { newGraph.AddRange(Field(12, ValueInfo(outName, Tensor()))); continue; }
            newGraph.AddRange(raw);
        }
        var result = new List<byte>();
        foreach (var (field, raw) in Fields(model))
            result.AddRange(field == 7 ? Field(7, newGraph.ToArray()) : raw);
        return result.ToArray();
    }

    static byte[] GraphBytes(byte[] model)
    {
        var (_, raw) = Fields(model).Single(f => f.Field == 7);
        int pos = 0;
        ReadVarint(raw, ref pos); ReadVarint(raw, ref pos);                      // key, length
        return raw[pos..];
    }

    /// <summary>Top-level fields of a protobuf message, each with its raw bytes (key included).</summary>
    static List<(int Field, byte[] Raw)> Fields(byte[] msg)
    {
        var list = new List<(int, byte[])>();
        int pos = 0;
        while (pos < msg.Length)
        {
            int start = pos;
            ulong key = ReadVarint(msg, ref pos);
            switch (key & 7)
            {
                case 0: ReadVarint(msg, ref pos); break;
                case 1: pos += 8; break;
                case 2: int n = (int)ReadVarint(msg, ref pos); pos += n; break;
                case 5: pos += 4; break;
                default: throw new InvalidDataException($"wire type {key & 7}");
            }
            list.Add(((int)(key >> 3), msg[start..pos]));
        }
        return list;
    }

    static ulong ReadVarint(byte[] b, ref int pos)
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            byte c = b[pos++];
            v |= (ulong)(c & 0x7f) << shift;
            if (c < 0x80) return v;
        }
    }

    static byte[] Varint(ulong v)
    {
        var o = new List<byte>();
        while (v >= 0x80) { o.Add((byte)(v | 0x80)); v >>= 7; }
        o.Add((byte)v);
        return o.ToArray();
    }

    static byte[] Field(int field, long value) => Varint((ulong)field << 3).Concat(Varint((ulong)value)).ToArray();
    static byte[] Field(int field, byte[] payload) => Varint(((ulong)field << 3) | 2).Concat(Varint((ulong)payload.Length)).Concat(payload).ToArray();

    [Fact]
    public void BadOnnxFilesAreClearErrors()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"svgd-resnet18-bad-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            string missing = Path.Combine(dir, "missing.onnx");
            var e = Assert.Throws<SvgdException>(() => ResNet18Encoder.FromOnnx(modelPath: missing));
            Assert.Contains(missing, e.Message);
            Assert.Contains("no such ONNX file", e.Message);

            // Cut short in the middle of the weights.
            string truncated = Path.Combine(dir, "truncated.onnx");
            using (var src = File.OpenRead(ResNet18Onnx.DefaultModelPath))
            using (var dst = File.Create(truncated))
            {
                var buf = new byte[1 << 20];
                src.ReadExactly(buf);
                dst.Write(buf);
            }
            e = Assert.Throws<SvgdException>(() => ResNet18Encoder.FromOnnx(modelPath: truncated));
            Assert.Contains("not a valid ONNX model", e.Message);
            Assert.DoesNotContain('\n', e.Message);

            string garbage = Path.Combine(dir, "garbage.onnx");
            File.WriteAllText(garbage, "this is not a protobuf file at all\n");
            e = Assert.Throws<SvgdException>(() => ResNet18.FromOnnx(garbage));
            Assert.Contains(garbage, e.Message);

            // A valid ONNX file of another graph: the preprocessing one given as the network.
            e = Assert.Throws<SvgdException>(() => ResNet18.FromOnnx(ResNet18Onnx.DefaultPreprocessPath));
            Assert.Contains("not the ResNet-18", e.Message);
            e = Assert.Throws<SvgdException>(() => ResNet18Onnx.ReadMeanImage(ResNet18Onnx.DefaultModelPath));
            Assert.Contains("not the ResNet preprocessing graph", e.Message);

            e = Assert.Throws<SvgdException>(() => fx.Encoder.Encode(torch.randn(1, 1, 64, 64)));
            Assert.Contains("[B, 3, H, W]", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
