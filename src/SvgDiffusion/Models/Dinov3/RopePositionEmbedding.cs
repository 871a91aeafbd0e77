using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Models.Dinov3;

/// <summary>
/// DINOv3's 2-D rotary embedding. Patch centres are normalised per axis to (-1, 1); each head's
/// dimension is split into y and x halves with periods base^(2i/(D/2)). The released .pth stores the
/// periods rounded to bf16, and the official model divides by them; Hugging Face recomputes
/// fp32 inverse frequencies and multiplies. Both are kept exact so both layouts reproduce their reference.
/// </summary>
public sealed class RopePositionEmbedding : nn.Module
{
    readonly int _headDim;
    readonly double _base;
#pragma warning disable IDE0044 // registered by name as a buffer
    Tensor periods;
#pragma warning restore IDE0044

    /// <summary>True after loading Hugging Face weights: angles use fp32 1/base^(4i/D) by multiplication.</summary>
    public bool UseInverseFrequency { get; set; }

    public RopePositionEmbedding(int headDim, double ropeBase) : base("rope_embed")
    {
        _headDim = headDim;
        _base = ropeBase;
        using var i = torch.arange(headDim / 4, dtype: ScalarType.Float32);
        using var expo = 2 * i / (headDim / 2);
        periods = torch.pow(torch.tensor(ropeBase, dtype: ScalarType.Float32), expo);
        register_buffer("periods", periods);
    }

    public Tensor Periods => periods;

    /// <summary>(sin, cos), each [h*w, headDim], float32.</summary>
    public (Tensor Sin, Tensor Cos) Forward(int h, int w)
    {
        using var scope = torch.NewDisposeScope();
        var dev = periods.device;
        var ch = torch.arange(0.5, h, 1.0, dtype: ScalarType.Float32, device: dev) / h;
        var cw = torch.arange(0.5, w, 1.0, dtype: ScalarType.Float32, device: dev) / w;
        var grid = torch.meshgrid(new[] { ch, cw }, indexing: "ij");
        var coords = torch.stack(grid, dim: -1).flatten(0, 1);           // [HW, 2]
        coords = 2.0 * coords - 1.0;
        var scaled = (2 * Math.PI) * coords.unsqueeze(-1);                 // [HW, 2, 1]
        Tensor angles;
        if (UseInverseFrequency)
        {
            var exponents = torch.arange(0.0, 1.0, 4.0 / _headDim, dtype: ScalarType.Float32, device: dev);
            var invFreq = 1.0 / torch.pow(torch.tensor(_base, dtype: ScalarType.Float32, device: dev), exponents);
            angles = scaled * invFreq.view(1, 1, -1);
        }
        else
        {
            angles = scaled / periods.to(ScalarType.Float32).view(1, 1, -1);
        }
        angles = angles.flatten(1, 2).tile(new long[] { 1, 2 });           // [HW, D]
        var sin = torch.sin(angles);
        var cos = torch.cos(angles);
        return (sin.MoveToOuterDisposeScope(), cos.MoveToOuterDisposeScope());
    }

    /// <summary>x * cos + rotate_half(x) * sin on the trailing patch tokens; prefix tokens pass unchanged.</summary>
    public static Tensor Apply(Tensor x, Tensor sin, Tensor cos)
    {
        using var scope = torch.NewDisposeScope();
        var dtype = x.dtype;
        long n = x.shape[^2], patches = sin.shape[0];
        long prefix = n - patches;
        var xf = x.to(ScalarType.Float32);
        var pre = xf.narrow(-2, 0, prefix);
        var pat = xf.narrow(-2, prefix, patches);
        var halves = pat.chunk(2, dim: -1);
        var rotated = torch.cat(new[] { -halves[1], halves[0] }, dim: -1);
        var roped = pat * cos + rotated * sin;
        return torch.cat(new[] { pre, roped }, dim: -2).to(dtype).MoveToOuterDisposeScope();
    }
}
