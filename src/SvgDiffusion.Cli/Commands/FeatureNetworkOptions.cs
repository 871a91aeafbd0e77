using System.CommandLine;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>Which network's features a Fréchet distance uses: pytorch-fid's Inception (FID) or one of our encoders (FD-&lt;network&gt;).</summary>
internal sealed class FeatureNetworkOptions
{
    public Option<string?> Inception { get; } = new("--inception") { Description = "pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth): gives FID comparable with published numbers." };
    public Option<string?> Network { get; } = new("--feature-network") { Description = "Use another network when no Inception weights exist: evaluator (the Fashion-MNIST classifier committed under models/evaluator, or --feature-encoder from 'svgd train-evaluator'; adds class accuracy), resnet18 (shipped) or dinov3 (with --feature-encoder). The result is labelled FD-<network>, never FID." };
    public Option<string?> Encoder { get; } = new("--feature-encoder") { Description = "Weights of the --feature-network (e.g. a DINOv3 .pth or safetensors)." };
    public Option<int> Size { get; } = new("--feature-size") { Description = "Input size of the --feature-network (Inception always resizes to 299 itself).", DefaultValueFactory = _ => 224 };

    public IEnumerable<Option> All => new Option[] { Inception, Network, Encoder, Size };

    /// <summary>Other frozen encoders register here (name -> factory from a weights path or null).</summary>
    public static readonly Dictionary<string, Func<string?, Models.Encoders.IFrozenEncoder>> Encoders = new(StringComparer.OrdinalIgnoreCase)
    {
        ["dinov3"] = path => Dinov3Checkpoint.Load(path ?? throw new SvgdException("--feature-network dinov3 needs --feature-encoder with DINOv3 weights")),
        // The ImageNet ResNet-18 shipped with the build: its 512-d pooled layer4 features.
        ["resnet18"] = path => path != null ? Models.ResNet.ResNet18Encoder.Load(path, new Models.ResNet.ResNet18Config { Stage = 32 })
                                            : Models.ResNet.ResNet18Encoder.FromOnnx(new Models.ResNet.ResNet18Config { Stage = 32 }),
    };

    public IFeatureNetwork Create(ParseResult p)
    {
        string? inception = p.GetValue(Inception), network = p.GetValue(Network);
        if (inception != null && network != null) throw new SvgdException("give either --inception or --feature-network, not both");
        if (inception != null) return new InceptionFeatureNetwork(FidInceptionV3.Load(inception));
        if (network == null)
            throw new SvgdException("FID needs pytorch-fid's Inception weights (--inception pt_inception-2015-12-05-6726825d.pth); without them use --feature-network (reported as FD-<network>, not FID)");
        if (network.Equals("evaluator", StringComparison.OrdinalIgnoreCase)) return EvaluatorFeatureNetwork.Load(p.GetValue(Encoder));
        if (!Encoders.TryGetValue(network, out var make))
            throw new SvgdException($"unknown --feature-network '{network}' (known: evaluator, {string.Join(", ", Encoders.Keys)})");
        var encoder = make(p.GetValue(Encoder));
        if (encoder is nn.Module m) m.eval();
        return new EncoderFeatureNetwork(encoder, p.GetValue(Size));
    }

    /// <summary>Per-image features [N, Dim] of an image folder.</summary>
    public static Tensor FolderFeatures(IFeatureNetwork net, string folder, int batchSize)
    {
        var parts = new List<Tensor>();
        foreach (var batch in ImageFiles.List(folder).Chunk(Math.Max(1, batchSize)))
        {
            using var scope = torch.NewDisposeScope();
            var images = batch.Select(f => ImageFiles.LoadRgb(f)).ToList();
            if (images.Any(i => !i.shape.SequenceEqual(images[0].shape)))
            {
                foreach (var img in images) parts.Add(net.Features(img.unsqueeze(0).to(ScalarType.Float32).div_(255.0)).MoveToOuterDisposeScope());
                continue;
            }
            parts.Add(net.Features(torch.stack(images).to(ScalarType.Float32).div_(255.0)).MoveToOuterDisposeScope());
        }
        var all = torch.cat(parts, 0);
        foreach (var t in parts) t.Dispose();
        return all;
    }

    /// <summary>Statistics of an image folder, streamed in batches of equal-sized images.</summary>
    public static FeatureMoments FolderMoments(IFeatureNetwork net, string folder, int batchSize, Action<long>? progress = null)
    {
        var files = ImageFiles.List(folder);
        var moments = new FeatureMoments(net.Dim);
        var pending = new List<Tensor>();
        void Flush()
        {
            if (pending.Count == 0) return;
            using var scope = torch.NewDisposeScope();
            var x = torch.stack(pending).to(ScalarType.Float32).div_(255.0);
            moments.Add(net.Features(x));
            progress?.Invoke(pending.Count);
            foreach (var t in pending) t.Dispose();
            pending.Clear();
        }
        foreach (var f in files)
        {
            var img = ImageFiles.LoadRgb(f);
            if (pending.Count > 0 && !pending[0].shape.SequenceEqual(img.shape)) Flush();
            pending.Add(img);
            if (pending.Count >= batchSize) Flush();
        }
        Flush();
        return moments;
    }
}
