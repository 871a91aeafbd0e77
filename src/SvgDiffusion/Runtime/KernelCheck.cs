using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Runtime;

/// <summary>
/// One kernel compared with a float64 reference. <see cref="Error"/> is the largest absolute difference
/// divided by the largest reference magnitude, so unit-scale and large outputs are judged alike.
/// </summary>
public sealed record KernelCheckResult(string Kernel, string Case, string Dtype, double Error, double Tolerance)
{
    public bool Passed => double.IsFinite(Error) && Error <= Tolerance;
}

/// <summary>
/// Checks the kernels the models use — conv (forward and backward, over in-channel counts on and off
/// the vector width), linear, scaled dot-product attention, group and layer norm — in fp32 and bf16
/// against float64 references computed without them (convolutions as unfold + matmul, attention and
/// norms written out). Small random inputs from a private generator: the global random stream is
/// untouched, so seeded runs are the same whether or not a check ran.
/// </summary>
public static class KernelCheck
{
    /// <summary>Bumped whenever the checks change, so cached verdicts of older checks are not reused.</summary>
    public const int Version = 3;

    /// <summary>fp32 kernels are right to about 1e-6 here; the wrong conv of the numerics issue is off by 0.4-0.8.</summary>
    public const double Fp32Tolerance = 1e-4;

    /// <summary>bf16 rounds inputs and outputs to 8 bits of mantissa (0.4%); the faulty bf16 conv is off by 10-20%.</summary>
    public const double Bf16Tolerance = 3e-2;

    /// <summary>In-channel counts of the conv grid: first layers (1, 3, 8) and off the vector width (20, 136, 392, 520); the model shapes below cover counts on it (64).</summary>
    public static readonly long[] ConvInChannels = { 1, 3, 8, 20, 48, 136, 392, 520 };

    /// <summary>Output channel counts off 16 (the decoder's RGB conv_out, a 136-channel head), checked at 64 input channels.</summary>
    public static readonly long[] ConvOutChannels = { 3, 136 };

    static readonly ScalarType[] Dtypes = { ScalarType.Float32, ScalarType.BFloat16 };

    public static string DtypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.BFloat16 => "bf16",
        ScalarType.Float16 => "fp16",
        ScalarType.Float64 => "fp64",
        _ => t.ToString(),
    };

    static double Tolerance(ScalarType t) => t == ScalarType.Float32 ? Fp32Tolerance : Bf16Tolerance;

    /// <summary>Runs every check with convolutions on <paramref name="conv"/>; the caller has set oneDNN on or off.</summary>
    public static List<KernelCheckResult> Run(ConvPath conv, bool includeNonConv = true)
    {
        using var inference = torch.inference_mode(false);
        using var grad = torch.enable_grad();
        using var scope = torch.NewDisposeScope();
        using var g = new Generator(0x5eed_c0de);
        var results = new List<KernelCheckResult>();
        // Without native bf16 instructions libtorch emulates bf16 convs some 25x slower than fp32 (and
        // bf16 is then not the fast path): there bf16 gets smaller planes of its own, keeping the whole
        // check well under a second.
        bool nativeBf16 = CpuInfo.Current.NativeBf16;
        var groups = nativeBf16
            ? new[] { (Dtypes, Size: 16L, Oc: 16L) }
            : new[] { (new[] { ScalarType.Float32 }, Size: 16L, Oc: 16L), (new[] { ScalarType.BFloat16 }, Size: 8L, Oc: 16L) };
        foreach (var (dtypes, size, oc) in groups)
        {
            // Each new shape costs oneDNN a kernel build for forward, backward-data and backward-weights,
            // which dominates the check's time: 1x1 convs are checked at stride 1 only.
            foreach (long ic in ConvInChannels)
                foreach (var (k, s) in new[] { (1L, 1L), (3L, 1L), (3L, 2L) })
                    results.AddRange(CheckConv(g, conv, dtypes, batch: 1, ic, oc, size, k, s, pad: k / 2));
            // The first layers of the models as they are: patch embedding, ResNet stem, PatchGAN.
            results.AddRange(CheckConv(g, conv, dtypes, batch: 1, ic: 3, oc, size: 2 * size, k: 16, s: 16, pad: 0));
            results.AddRange(CheckConv(g, conv, dtypes, batch: 1, ic: 3, oc, size: 2 * size, k: 7, s: 2, pad: 3));
            results.AddRange(CheckConv(g, conv, dtypes, batch: 2, ic: 64, oc, size, k: 4, s: 2, pad: 1));
            foreach (long outChannels in ConvOutChannels)
                foreach (var (k, s) in new[] { (1L, 1L), (3L, 1L), (3L, 2L) })
                    results.AddRange(CheckConv(g, conv, dtypes, batch: 2, ic: 64, outChannels, size, k, s, pad: k / 2));
        }
        if (includeNonConv)
        {
            foreach (var dtype in Dtypes)
            {
                results.AddRange(CheckLinear(g, dtype, rows: 37, inFeatures: 392, outFeatures: 136));
                results.AddRange(CheckLinear(g, dtype, rows: 16, inFeatures: 384, outFeatures: 1536));
                results.Add(CheckAttention(g, dtype, batch: 2, heads: 6, tokens: 33, headDim: 64));
                results.Add(CheckAttention(g, dtype, batch: 1, heads: 1, tokens: 64, headDim: 136));
                results.Add(CheckGroupNorm(g, dtype));
                results.Add(CheckLayerNorm(g, dtype));
            }
        }
        return results.OrderBy(r => r.Dtype == "fp32" ? 0 : 1).ToList();
    }

    /// <summary>A float64 tensor whose values are exactly representable in <paramref name="dtype"/>.</summary>
    static Tensor Random(Generator g, ScalarType dtype, params long[] shape)
    {
        using var x = torch.randn(shape, ScalarType.Float32, generator: g);
        using var rounded = x.to(dtype);
        return rounded.to(ScalarType.Float64);
    }

    /// <summary>Largest absolute difference over the largest reference magnitude; NaN when <paramref name="actual"/> is not finite.</summary>
    internal static double Error(Tensor actual, Tensor reference)
    {
        using var scope = torch.NewDisposeScope();
        var a = actual.to(ScalarType.Float64);
        double scale = reference.abs().max().item<double>();
        double err = (a - reference).abs().max().item<double>();
        return a.isfinite().all().item<bool>() ? err / Math.Max(scale, 1e-30) : double.NaN;
    }

    /// <summary>
    /// One conv shape in fp32 and bf16 against one float64 reference: the inputs are bf16-representable,
    /// so both precisions start from exactly the values the reference uses.
    /// </summary>
    public static IEnumerable<KernelCheckResult> CheckConv(Generator g, ConvPath path, ScalarType[] dtypes, long batch, long ic, long oc, long size, long k, long s, long pad)
    {
        using var inference = torch.inference_mode(false);
        using var grad = torch.enable_grad();
        using var scope = torch.NewDisposeScope();
        const ScalarType bf16 = ScalarType.BFloat16;
        // Weights scaled by 1/sqrt(fan-in) keep outputs of unit scale whatever the channel count.
        var x64 = Random(g, bf16, batch, ic, size, size);
        var w64 = (Random(g, bf16, oc, ic, k, k) / Math.Sqrt(ic * k * k)).to(bf16).to(ScalarType.Float64);
        var b64 = Random(g, bf16, oc);
        long outSize = (size + 2 * pad - k) / s + 1;
        var gy64 = Random(g, bf16, batch, oc, outSize, outSize);

        var xr = x64.clone().requires_grad_();
        var wr = w64.clone().requires_grad_();
        var yr = ReferenceConv(xr, wr, b64, k, s, pad, outSize);
        yr.backward(new[] { gy64 });

        string name = $"in {ic}, out {oc}, {k}x{k}, stride {s}";
        var results = new List<KernelCheckResult>();
        foreach (var dtype in dtypes)
        {
            var x = x64.to(dtype).requires_grad_();
            var w = w64.to(dtype).requires_grad_();
            var y = Convolution.Conv2d(x, w, b64.to(dtype), (s, s), (pad, pad), (1, 1), 1, path);
            y.backward(new[] { gy64.to(dtype) });
            double tol = Tolerance(dtype);
            double ex = Error(x.grad!, xr.grad!), ew = Error(w.grad!, wr.grad!);
            results.Add(new KernelCheckResult("conv2d", name, DtypeName(dtype), Error(y, yr), tol));
            results.Add(new KernelCheckResult("conv2d backward", name, DtypeName(dtype), double.IsNaN(ex) || double.IsNaN(ew) ? double.NaN : Math.Max(ex, ew), tol));
        }
        return results;
    }

    /// <summary>
    /// Convolution in float64 (which never reaches oneDNN) without any conv kernel: small kernels as a
    /// sum over kernel offsets of matmuls on strided slices of the padded input (libtorch's float64
    /// unfold is slow at hundreds of channels), large ones (the patch embedding, the stem: few
    /// channels) as unfold + one matmul.
    /// </summary>
    static Tensor ReferenceConv(Tensor x, Tensor w, Tensor b, long k, long s, long pad, long outSize)
    {
        long batch = x.shape[0], ic = x.shape[1], oc = w.shape[0];
        if (k > 3)
        {
            var cols = nn.functional.unfold(x, (k, k), padding: (pad, pad), stride: (s, s)); // [B, C*k*k, L]
            return (w.reshape(oc, -1).matmul(cols) + b.reshape(1, oc, 1)).reshape(batch, oc, outSize, outSize);
        }
        var xp = pad > 0 ? nn.functional.pad(x, new[] { pad, pad, pad, pad }) : x;
        long span = s * (outSize - 1) + 1;
        Tensor y = b.reshape(1, oc, 1).expand(batch, oc, outSize * outSize);
        for (long i = 0; i < k; i++)
            for (long j = 0; j < k; j++)
            {
                var patch = xp.slice(2, i, i + span, s).slice(3, j, j + span, s).reshape(batch, ic, outSize * outSize);
                y = y + w.select(3, j).select(2, i).matmul(patch);
            }
        return y.reshape(batch, oc, outSize, outSize);
    }

    static IEnumerable<KernelCheckResult> CheckLinear(Generator g, ScalarType dtype, long rows, long inFeatures, long outFeatures)
    {
        using var scope = torch.NewDisposeScope();
        var x64 = Random(g, dtype, rows, inFeatures);
        var w64 = (Random(g, dtype, outFeatures, inFeatures) / Math.Sqrt(inFeatures)).to(dtype).to(ScalarType.Float64);
        var b64 = Random(g, dtype, outFeatures);
        var gy64 = Random(g, dtype, rows, outFeatures);
        var x = x64.to(dtype).requires_grad_();
        var w = w64.to(dtype).requires_grad_();
        var y = nn.functional.linear(x, w, b64.to(dtype));
        y.backward(new[] { gy64.to(dtype) });
        var yr = x64.matmul(w64.t()) + b64;
        var gx = gy64.matmul(w64);
        var gw = gy64.t().matmul(x64);
        string name = $"{rows}x{inFeatures} -> {outFeatures}";
        double tol = Tolerance(dtype);
        double ex = Error(x.grad!, gx), ew = Error(w.grad!, gw);
        return new[]
        {
            new KernelCheckResult("linear", name, DtypeName(dtype), Error(y, yr), tol),
            new KernelCheckResult("linear backward", name, DtypeName(dtype), double.IsNaN(ex) || double.IsNaN(ew) ? double.NaN : Math.Max(ex, ew), tol),
        };
    }

    static KernelCheckResult CheckAttention(Generator g, ScalarType dtype, long batch, long heads, long tokens, long headDim)
    {
        using var scope = torch.NewDisposeScope();
        var q = Random(g, dtype, batch, heads, tokens, headDim);
        var k = Random(g, dtype, batch, heads, tokens, headDim);
        var v = Random(g, dtype, batch, heads, tokens, headDim);
        using var noGrad = torch.no_grad();
        var y = nn.functional.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype));
        var logits = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(headDim);
        var yr = logits.softmax(-1).matmul(v);
        return new KernelCheckResult("scaled_dot_product_attention", $"{batch}x{heads} heads, {tokens} tokens, dim {headDim}", DtypeName(dtype), Error(y, yr), Tolerance(dtype));
    }

    static KernelCheckResult CheckGroupNorm(Generator g, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        const long groups = 32, channels = 128;
        var x = Random(g, dtype, 2, channels, 9, 9) * 3 + 1;
        x = x.to(dtype).to(ScalarType.Float64);
        var w = Random(g, dtype, channels);
        var b = Random(g, dtype, channels);
        using var noGrad = torch.no_grad();
        var y = nn.functional.group_norm(x.to(dtype), groups, w.to(dtype), b.to(dtype), 1e-6);
        var xg = x.reshape(2, groups, -1);
        var mean = xg.mean(new long[] { 2 }, keepdim: true);
        var variance = (xg - mean).pow(2).mean(new long[] { 2 }, keepdim: true);
        var yr = ((xg - mean) / (variance + 1e-6).sqrt()).reshape(x.shape) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1);
        return new KernelCheckResult("group_norm", "2x128x9x9, 32 groups", DtypeName(dtype), Error(y, yr), Tolerance(dtype));
    }

    static KernelCheckResult CheckLayerNorm(Generator g, ScalarType dtype)
    {
        using var scope = torch.NewDisposeScope();
        const long dim = 392;
        var x = (Random(g, dtype, 37, dim) * 2 - 0.5).to(dtype).to(ScalarType.Float64);
        var w = Random(g, dtype, dim);
        var b = Random(g, dtype, dim);
        using var noGrad = torch.no_grad();
        var y = nn.functional.layer_norm(x.to(dtype), new[] { dim }, w.to(dtype), b.to(dtype), 1e-6);
        var mean = x.mean(new long[] { 1 }, keepdim: true);
        var variance = (x - mean).pow(2).mean(new long[] { 1 }, keepdim: true);
        var yr = (x - mean) / (variance + 1e-6).sqrt() * w + b;
        return new KernelCheckResult("layer_norm", $"37x{dim}", DtypeName(dtype), Error(y, yr), Tolerance(dtype));
    }
}
