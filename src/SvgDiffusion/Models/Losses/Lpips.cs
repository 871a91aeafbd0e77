using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Models.Common;

namespace SvgDiffusion.Models.Losses;

/// <summary>
/// LPIPS with a VGG-16 trunk (Zhang et al. 2018): unit-normalised activations at relu1_2, relu2_2,
/// relu3_3, relu4_3, relu5_3, squared differences weighted per channel by learned 1x1 convs, averaged
/// over space and summed. Needs two released files: torchvision's VGG-16 (<c>features.N.*</c>) and the
/// LPIPS linear layers (<c>lin0.model.1.weight</c> ... <c>lin4</c>); one merged file also works.
/// </summary>
public sealed class Lpips : nn.Module
{
    static readonly int[] Conv = { 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 };
    static readonly int[] Channels = { 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512 };
    // Indices into `features` after which a slice ends (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
    static readonly int[] SliceEnds = { 3, 8, 15, 22, 29 };
    static readonly int[] SliceChannels = { 64, 128, 256, 512, 512 };

    readonly Sequential features;
    readonly ModuleList<Sequential> lins;
    readonly Tensor shift, scale;

    public Lpips() : base("lpips")
    {
        var mods = new List<(string, Module<Tensor, Tensor>)>();
        int c = 3, k = 0;
        for (int i = 0; i < 30; i++)
        {
            if (k < Conv.Length && Conv[k] == i) { mods.Add(($"{i}", new ConvLayer(c, Channels[k], 3, padding: 1))); c = Channels[k]; k++; }
            else if (i is 4 or 9 or 16 or 23) mods.Add(($"{i}", MaxPool2d(2, 2)));
            else mods.Add(($"{i}", ReLU()));
        }
        features = Sequential(mods);
        lins = new ModuleList<Sequential>(SliceChannels.Select(ch =>
            Sequential(("0", (Module<Tensor, Tensor>)Dropout(0.5)), ("1", new ConvLayer(ch, 1, 1, bias: false)))).ToArray());
        shift = torch.tensor(new float[] { -0.030f, -0.088f, -0.188f }).view(1, 3, 1, 1);
        scale = torch.tensor(new float[] { 0.458f, 0.448f, 0.450f }).view(1, 3, 1, 1);
        RegisterComponents();
        foreach (var p in parameters()) p.requires_grad = false;
        eval();
    }

    /// <summary>Loads VGG-16 and the linear layers from one or two files; keys are checked like any model.</summary>
    public static Lpips Load(string linPath, string? vggPath = null)
    {
        var model = new Lpips();
        var sd = new Dictionary<string, Tensor>();
        foreach (var path in new[] { linPath, vggPath }.OfType<string>())
        {
            var file = Checkpoint.Open(path).StateDict();
            foreach (var (key, t) in file)
            {
                string k = key.StartsWith("net.", StringComparison.Ordinal) ? key[4..] : key;
                if (k.StartsWith("features.", StringComparison.Ordinal)) sd[k] = t;
                else if (k.StartsWith("lin", StringComparison.Ordinal) && k.Length > 3 && char.IsDigit(k[3]))
                    sd["lins." + k[3] + k[4..].Replace(".model.", ".")] = t;
            }
        }
        // The input scaling is a constant of LPIPS, not something the files need to carry.
        sd["shift"] = model.shift;
        sd["scale"] = model.scale;
        string source = vggPath == null ? linPath : $"{linPath} + {vggPath}";
        StateDictLoader.Load(model, sd, source);
        model.eval();
        return model;
    }

    /// <summary>Per-image distance of images in [-1, 1]: [B].</summary>
    public Tensor Forward(Tensor a, Tensor b)
    {
        using var scope = torch.NewDisposeScope();
        var sh = shift.to(a.dtype, a.device);
        var sc = scale.to(a.dtype, a.device);
        var x = (a - sh) / sc;
        var y = (b - sh) / sc;
        Tensor total = torch.zeros(a.shape[0], dtype: a.dtype, device: a.device);
        int start = 0, level = 0;
        var layers = features.children().Cast<Module<Tensor, Tensor>>().ToList();
        foreach (int end in SliceEnds)
        {
            for (int i = start; i <= end && i < layers.Count; i++) { x = layers[i].forward(x); y = layers[i].forward(y); }
            start = end + 1;
            var nx = x / (x.pow(2).sum(1, keepdim: true).sqrt() + 1e-10);
            var ny = y / (y.pow(2).sum(1, keepdim: true).sqrt() + 1e-10);
            var d = lins[level++].forward((nx - ny).pow(2));
            total = total + d.mean(new long[] { 1, 2, 3 });
        }
        return total.MoveToOuterDisposeScope();
    }
}
