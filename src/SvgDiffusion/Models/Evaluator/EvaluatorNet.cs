using SvgDiffusion.Checkpoints;
using SvgDiffusion.Models.Common;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace SvgDiffusion.Models.Evaluator;

/// <summary>
/// A small image classifier that scores generated images from outside every model under
/// study: no autoencoder, frozen encoder or DiT trains with it, so its features cannot favour one latent
/// space by construction (as FD-resnet18 favours latents built from that ResNet-18). It takes RGB images
/// in [-1, 1] and classifies their luminance, so a colour tint in a sample does not change its class, or
/// (<see cref="EvaluatorConfig.InputChannels"/> 3) their colour.
/// </summary>
public sealed class EvaluatorNet : nn.Module
{
    public EvaluatorConfig Config { get; }

    readonly Sequential features;
    readonly Linear hidden;
    readonly BatchNorm1d hidden_norm;
    readonly Dropout dropout;
    readonly Linear head;

    public EvaluatorNet(EvaluatorConfig config) : base("EvaluatorNet")
    {
        Config = config.Validate("evaluator config");
        var layers = new List<(string, nn.Module<Tensor, Tensor>)>();
        int inCh = config.InputChannels, k = 0;
        for (int s = 0; s < config.Channels.Length; s++)
        {
            for (int b = 0; b < config.Blocks[s]; b++)
            {
                int c = config.Channels[s];
                layers.Add(($"{k++}", new ConvLayer(inCh, c, 3, padding: 1, bias: false)));
                var bn = nn.BatchNorm2d(c);
                // Identity start, as PyTorch's reset_parameters gives (not left to the binding's defaults).
                using (torch.no_grad()) { bn.weight!.fill_(1); bn.bias!.zero_(); }
                layers.Add(($"{k++}", bn));
                layers.Add(($"{k++}", nn.ReLU()));
                inCh = c;
            }
            layers.Add(($"{k++}", nn.MaxPool2d(2)));
        }
        features = nn.Sequential(layers);
        hidden = nn.Linear((long)inCh * config.FinalSize * config.FinalSize, config.Hidden);
        hidden_norm = nn.BatchNorm1d(config.Hidden);
        using (torch.no_grad()) { hidden_norm.weight!.fill_(1); hidden_norm.bias!.zero_(); }
        dropout = nn.Dropout(config.Dropout);
        head = nn.Linear(config.FeatureDim, config.NumClasses);
        RegisterComponents();
    }

    /// <summary>[B, 3, S, S] RGB in [-1, 1] (or [B, 1, S, S] grey) -> [B, FeatureDim] features (the hidden layer's output).</summary>
    public Tensor Features(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] is not (1 or 3) || images.shape[2] != Config.ImageSize || images.shape[3] != Config.ImageSize)
            throw new SvgdException($"the evaluator takes [B, 3, {Config.ImageSize}, {Config.ImageSize}] images, got {Checkpoint.Shape(images.shape)}");
        using var scope = torch.NewDisposeScope();
        if (Config.InputChannels == 3 && images.shape[1] != 3) throw new SvgdException($"this evaluator judges colour: it takes [B, 3, {Config.ImageSize}, {Config.ImageSize}] RGB images, got {Checkpoint.Shape(images.shape)}");
        var grey = Config.InputChannels == 1 && images.shape[1] == 3 ? images.mean(new long[] { 1 }, keepdim: true) : images;
        var map = features.forward(grey.to(ScalarType.Float32)).flatten(1);
        return functional.relu(hidden_norm.forward(hidden.forward(map))).MoveToOuterDisposeScope();
    }

    public Tensor Logits(Tensor features) => head.forward(dropout.forward(features));

    public Tensor Forward(Tensor images)
    {
        using var scope = torch.NewDisposeScope();
        return Logits(Features(images)).MoveToOuterDisposeScope();
    }
}
