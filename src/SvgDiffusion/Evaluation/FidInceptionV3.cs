using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Evaluation;

/// <summary>
/// The InceptionV3 FID is defined with: pytorch-fid's port of the TensorFlow 2015-12-05 graph
/// (torchvision Inception3 layout, FID-specific blocks, 1008 classes, no auxiliary head). Images
/// [B,3,H,W] in [0,1] are resized to 299x299 (bilinear, align_corners=False, no antialiasing), scaled
/// to [-1,1], and mapped to the 2048-d average-pooled "pool3" features; the 1008-way classifier is
/// kept for the Inception Score. State-dict names are those of <c>pt_inception-2015-12-05-6726825d.pth</c>.
/// </summary>
public sealed class FidInceptionV3 : Module<Tensor, Tensor>
{
    public const int FeatureDim = 2048;
    public const int NumClasses = 1008;
    public const int InputSize = 299;

    readonly BasicConv2d Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, Conv2d_3b_1x1, Conv2d_4a_3x3;
    readonly FidInceptionA Mixed_5b, Mixed_5c, Mixed_5d;
    readonly FidInceptionB Mixed_6a;
    readonly FidInceptionC Mixed_6b, Mixed_6c, Mixed_6d, Mixed_6e;
    readonly FidInceptionD Mixed_7a;
    readonly FidInceptionE Mixed_7b, Mixed_7c;
    readonly Linear fc;

    public FidInceptionV3() : base(nameof(FidInceptionV3))
    {
        Conv2d_1a_3x3 = new BasicConv2d(3, 32, 3, stride: 2);
        Conv2d_2a_3x3 = new BasicConv2d(32, 32, 3);
        Conv2d_2b_3x3 = new BasicConv2d(32, 64, 3, padding: 1);
        Conv2d_3b_1x1 = new BasicConv2d(64, 80, 1);
        Conv2d_4a_3x3 = new BasicConv2d(80, 192, 3);
        Mixed_5b = new FidInceptionA(192, poolFeatures: 32);
        Mixed_5c = new FidInceptionA(256, poolFeatures: 64);
        Mixed_5d = new FidInceptionA(288, poolFeatures: 64);
        Mixed_6a = new FidInceptionB(288);
        Mixed_6b = new FidInceptionC(768, channels7x7: 128);
        Mixed_6c = new FidInceptionC(768, channels7x7: 160);
        Mixed_6d = new FidInceptionC(768, channels7x7: 160);
        Mixed_6e = new FidInceptionC(768, channels7x7: 192);
        Mixed_7a = new FidInceptionD(768);
        Mixed_7b = new FidInceptionE(1280, maxPool: false);
        Mixed_7c = new FidInceptionE(2048, maxPool: true);
        fc = Linear(FeatureDim, NumClasses);
        RegisterComponents();
        eval();
    }

    /// <summary>Loads <c>pt_inception-2015-12-05-6726825d.pth</c> (or the same weights in any container <see cref="Checkpoint"/> reads).</summary>
    public static FidInceptionV3 Load(string path, string? section = null)
    {
        var sd = Checkpoint.Open(path).StateDict(section);
        return FromStateDict(sd, path);
    }

    /// <summary>A model holding <paramref name="stateDict"/>; <c>num_batches_tracked</c> may be absent (files saved by older PyTorch).</summary>
    public static FidInceptionV3 FromStateDict(IReadOnlyDictionary<string, Tensor> stateDict, string source)
    {
        var model = new FidInceptionV3();
        try
        {
            var sd = new Dictionary<string, Tensor>(stateDict);
            foreach (var (k, v) in model.state_dict())
                if (k.EndsWith(".num_batches_tracked", StringComparison.Ordinal) && !sd.ContainsKey(k))
                    sd[k] = torch.zeros_like(v);
            // The auxiliary classifier is not part of the FID network; a full torchvision Inception3 checkpoint still fits.
            StateDictLoader.Load(model, sd, source, ignore: k => k.StartsWith("AuxLogits.", StringComparison.Ordinal));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.eval();
        return model;
    }

    /// <summary>pool3 features [B,2048] of images [B,3,H,W] with values in [0,1] (run without autograd, on the model's device and dtype).</summary>
    /// <param name="resize">Bilinear resize to 299x299 first (pytorch-fid's default); without it the input must already be the size wanted.</param>
    public Tensor Features(Tensor images, bool resize = true)
    {
        if (images.dim() != 4 || images.shape[1] != 3)
            throw new SvgdException($"FID Inception: expected images [B, 3, H, W], got {Checkpoint.Shape(images.shape)}");
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var x = images.to(fc.weight!.dtype, fc.weight.device);
        if (resize)
            x = functional.interpolate(x, size: new long[] { InputSize, InputSize }, mode: InterpolationMode.Bilinear, align_corners: false);
        x = 2 * x - 1;
        x = Conv2d_1a_3x3.forward(x);
        x = Conv2d_2a_3x3.forward(x);
        x = Conv2d_2b_3x3.forward(x);
        x = functional.max_pool2d(x, kernel_size: 3, stride: 2);
        x = Conv2d_3b_1x1.forward(x);
        x = Conv2d_4a_3x3.forward(x);
        x = functional.max_pool2d(x, kernel_size: 3, stride: 2);
        x = Mixed_5b.forward(x);
        x = Mixed_5c.forward(x);
        x = Mixed_5d.forward(x);
        x = Mixed_6a.forward(x);
        x = Mixed_6b.forward(x);
        x = Mixed_6c.forward(x);
        x = Mixed_6d.forward(x);
        x = Mixed_6e.forward(x);
        x = Mixed_7a.forward(x);
        x = Mixed_7b.forward(x);
        x = Mixed_7c.forward(x);
        x = functional.adaptive_avg_pool2d(x, new long[] { 1, 1 });
        return x.flatten(1).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Classifier logits [B,1008] from pool3 features. <paramref name="includeBias"/>=false gives
    /// pool3·Wᵀ, the logits the TensorFlow Inception Score code (and the ADM evaluator, torch-fidelity)
    /// feed to the softmax; true gives the full <c>fc</c> layer.
    /// </summary>
    public Tensor Logits(Tensor pool3, bool includeBias = true)
    {
        using var _ = torch.no_grad();
        using var x = pool3.to(fc.weight!.dtype, fc.weight.device);
        return includeBias ? fc.forward(x) : functional.linear(x, fc.weight);
    }

    public override Tensor forward(Tensor images) => Features(images);
}
