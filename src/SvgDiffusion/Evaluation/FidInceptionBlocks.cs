using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Evaluation;

// The blocks of torchvision's Inception3 in the variant pytorch-fid builds for FID (ported from the
// TensorFlow 2015-12-05 graph): the average pools of the A, C and first E blocks exclude padding from
// the count, and the last E block max-pools in its pool branch. Field names are the state-dict names.

/// <summary>Convolution without bias, batch norm (eps 0.001), ReLU.</summary>
public sealed class BasicConv2d : Module<Tensor, Tensor>
{
    readonly ConvLayer conv;
    readonly BatchNorm2d bn;

    public BasicConv2d(long inChannels, long outChannels, (long, long) kernel, (long, long)? stride = null, (long, long)? padding = null)
        : base(nameof(BasicConv2d))
    {
        conv = new ConvLayer(inChannels, outChannels, kernel, stride: stride ?? (1, 1), padding: padding ?? (0, 0), bias: false);
        bn = BatchNorm2d(outChannels, eps: 0.001);
        RegisterComponents();
    }

    public BasicConv2d(long inChannels, long outChannels, long kernel, long stride = 1, long padding = 0)
        : this(inChannels, outChannels, (kernel, kernel), (stride, stride), (padding, padding)) { }

    public override Tensor forward(Tensor x)
    {
        using var c = conv.forward(x);
        using var b = bn.forward(c);
        return functional.relu(b);
    }
}

static class InceptionPools
{
    /// <summary>3x3 stride-1 average pool, padding 1, averaging only over in-image pixels (count_include_pad=False).</summary>
    public static Tensor AvgExcludingPad(Tensor x) =>
        functional.avg_pool2d(x, kernel_size: 3, stride: 1, padding: 1, count_include_pad: false);
}

/// <summary>Mixed_5b/5c/5d (pytorch-fid's FIDInceptionA).</summary>
public sealed class FidInceptionA : Module<Tensor, Tensor>
{
    readonly BasicConv2d branch1x1, branch5x5_1, branch5x5_2, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3, branch_pool;

    public FidInceptionA(long inChannels, long poolFeatures) : base(nameof(FidInceptionA))
    {
        branch1x1 = new BasicConv2d(inChannels, 64, 1);
        branch5x5_1 = new BasicConv2d(inChannels, 48, 1);
        branch5x5_2 = new BasicConv2d(48, 64, 5, padding: 2);
        branch3x3dbl_1 = new BasicConv2d(inChannels, 64, 1);
        branch3x3dbl_2 = new BasicConv2d(64, 96, 3, padding: 1);
        branch3x3dbl_3 = new BasicConv2d(96, 96, 3, padding: 1);
        branch_pool = new BasicConv2d(inChannels, poolFeatures, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var b5 = branch5x5_2.forward(branch5x5_1.forward(x));
        var b3 = branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x)));
        var bp = branch_pool.forward(InceptionPools.AvgExcludingPad(x));
        return torch.cat(new[] { b1, b5, b3, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>Mixed_6a (torchvision InceptionB): grid reduction 35 → 17.</summary>
public sealed class FidInceptionB : Module<Tensor, Tensor>
{
    readonly BasicConv2d branch3x3, branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3;

    public FidInceptionB(long inChannels) : base(nameof(FidInceptionB))
    {
        branch3x3 = new BasicConv2d(inChannels, 384, 3, stride: 2);
        branch3x3dbl_1 = new BasicConv2d(inChannels, 64, 1);
        branch3x3dbl_2 = new BasicConv2d(64, 96, 3, padding: 1);
        branch3x3dbl_3 = new BasicConv2d(96, 96, 3, stride: 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var b3 = branch3x3.forward(x);
        var bd = branch3x3dbl_3.forward(branch3x3dbl_2.forward(branch3x3dbl_1.forward(x)));
        var bp = functional.max_pool2d(x, kernel_size: 3, stride: 2);
        return torch.cat(new[] { b3, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>Mixed_6b..6e (pytorch-fid's FIDInceptionC): factorised 7x7 convolutions.</summary>
public sealed class FidInceptionC : Module<Tensor, Tensor>
{
    readonly BasicConv2d branch1x1;
    readonly BasicConv2d branch7x7_1, branch7x7_2, branch7x7_3;
    readonly BasicConv2d branch7x7dbl_1, branch7x7dbl_2, branch7x7dbl_3, branch7x7dbl_4, branch7x7dbl_5;
    readonly BasicConv2d branch_pool;

    public FidInceptionC(long inChannels, long channels7x7) : base(nameof(FidInceptionC))
    {
        long c7 = channels7x7;
        branch1x1 = new BasicConv2d(inChannels, 192, 1);
        branch7x7_1 = new BasicConv2d(inChannels, c7, 1);
        branch7x7_2 = new BasicConv2d(c7, c7, (1, 7), padding: (0, 3));
        branch7x7_3 = new BasicConv2d(c7, 192, (7, 1), padding: (3, 0));
        branch7x7dbl_1 = new BasicConv2d(inChannels, c7, 1);
        branch7x7dbl_2 = new BasicConv2d(c7, c7, (7, 1), padding: (3, 0));
        branch7x7dbl_3 = new BasicConv2d(c7, c7, (1, 7), padding: (0, 3));
        branch7x7dbl_4 = new BasicConv2d(c7, c7, (7, 1), padding: (3, 0));
        branch7x7dbl_5 = new BasicConv2d(c7, 192, (1, 7), padding: (0, 3));
        branch_pool = new BasicConv2d(inChannels, 192, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var b7 = branch7x7_3.forward(branch7x7_2.forward(branch7x7_1.forward(x)));
        var bd = branch7x7dbl_1.forward(x);
        bd = branch7x7dbl_2.forward(bd);
        bd = branch7x7dbl_3.forward(bd);
        bd = branch7x7dbl_4.forward(bd);
        bd = branch7x7dbl_5.forward(bd);
        var bp = branch_pool.forward(InceptionPools.AvgExcludingPad(x));
        return torch.cat(new[] { b1, b7, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>Mixed_7a (torchvision InceptionD): grid reduction 17 → 8.</summary>
public sealed class FidInceptionD : Module<Tensor, Tensor>
{
    readonly BasicConv2d branch3x3_1, branch3x3_2, branch7x7x3_1, branch7x7x3_2, branch7x7x3_3, branch7x7x3_4;

    public FidInceptionD(long inChannels) : base(nameof(FidInceptionD))
    {
        branch3x3_1 = new BasicConv2d(inChannels, 192, 1);
        branch3x3_2 = new BasicConv2d(192, 320, 3, stride: 2);
        branch7x7x3_1 = new BasicConv2d(inChannels, 192, 1);
        branch7x7x3_2 = new BasicConv2d(192, 192, (1, 7), padding: (0, 3));
        branch7x7x3_3 = new BasicConv2d(192, 192, (7, 1), padding: (3, 0));
        branch7x7x3_4 = new BasicConv2d(192, 192, 3, stride: 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var b3 = branch3x3_2.forward(branch3x3_1.forward(x));
        var b7 = branch7x7x3_4.forward(branch7x7x3_3.forward(branch7x7x3_2.forward(branch7x7x3_1.forward(x))));
        var bp = functional.max_pool2d(x, kernel_size: 3, stride: 2);
        return torch.cat(new[] { b3, b7, bp }, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Mixed_7b (pytorch-fid's FIDInceptionE_1: average pool excluding padding) and Mixed_7c
/// (FIDInceptionE_2: 3x3 max pool, stride 1, padding 1, in the pool branch).
/// </summary>
public sealed class FidInceptionE : Module<Tensor, Tensor>
{
    readonly BasicConv2d branch1x1;
    readonly BasicConv2d branch3x3_1, branch3x3_2a, branch3x3_2b;
    readonly BasicConv2d branch3x3dbl_1, branch3x3dbl_2, branch3x3dbl_3a, branch3x3dbl_3b;
    readonly BasicConv2d branch_pool;
    readonly bool _maxPool;

    public FidInceptionE(long inChannels, bool maxPool) : base(nameof(FidInceptionE))
    {
        _maxPool = maxPool;
        branch1x1 = new BasicConv2d(inChannels, 320, 1);
        branch3x3_1 = new BasicConv2d(inChannels, 384, 1);
        branch3x3_2a = new BasicConv2d(384, 384, (1, 3), padding: (0, 1));
        branch3x3_2b = new BasicConv2d(384, 384, (3, 1), padding: (1, 0));
        branch3x3dbl_1 = new BasicConv2d(inChannels, 448, 1);
        branch3x3dbl_2 = new BasicConv2d(448, 384, 3, padding: 1);
        branch3x3dbl_3a = new BasicConv2d(384, 384, (1, 3), padding: (0, 1));
        branch3x3dbl_3b = new BasicConv2d(384, 384, (3, 1), padding: (1, 0));
        branch_pool = new BasicConv2d(inChannels, 192, 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var b1 = branch1x1.forward(x);
        var t = branch3x3_1.forward(x);
        var b3 = torch.cat(new[] { branch3x3_2a.forward(t), branch3x3_2b.forward(t) }, 1);
        var u = branch3x3dbl_2.forward(branch3x3dbl_1.forward(x));
        var bd = torch.cat(new[] { branch3x3dbl_3a.forward(u), branch3x3dbl_3b.forward(u) }, 1);
        var pooled = _maxPool
            ? functional.max_pool2d(x, kernel_size: 3, stride: 1, padding: 1)
            : InceptionPools.AvgExcludingPad(x);
        var bp = branch_pool.forward(pooled);
        return torch.cat(new[] { b1, b3, bd, bp }, 1).MoveToOuterDisposeScope();
    }
}
