using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using SvgDiffusion.Distributed;

namespace SvgDiffusion.Models.Diffusion;

/// <summary>
/// Class labels to vectors (<c>embedding_table</c>). Row <c>num_classes</c> is the null label: training
/// replaces labels with it at random so the same network also learns the unconditional velocity that
/// classifier-free guidance extrapolates from.
/// </summary>
public sealed class LabelEmbedder : nn.Module
{
    readonly Embedding embedding_table;
    readonly int _numClasses;
    readonly double _dropoutProb;

    public LabelEmbedder(int numClasses, int hidden, double dropoutProb) : base("y_embedder")
    {
        _numClasses = numClasses;
        _dropoutProb = dropoutProb;
        embedding_table = Embedding(numClasses + (dropoutProb > 0 ? 1 : 0), hidden);
        RegisterComponents();
    }

    internal Embedding Table => embedding_table;

    /// <summary>Labels with a random subset (probability class_dropout_prob each) replaced by the null label.</summary>
    public Tensor DropLabels(Tensor labels, Generator? generator = null)
    {
        using var scope = torch.NewDisposeScope();
        var drop = torch.rand(labels.shape[0], generator: generator, device: labels.device) < _dropoutProb;
        return torch.where(drop, torch.full_like(labels, _numClasses), labels).MoveToOuterDisposeScope();
    }

    /// <summary>Labels dropped per sample, each from its own stream of <paramref name="random"/> (see <see cref="SampleRandom"/>).</summary>
    public Tensor DropLabels(Tensor labels, SampleRandom random)
    {
        if (labels.shape[0] != random.Count) throw new InvalidOperationException($"{labels.shape[0]} labels but {random.Count} sample streams");
        using var scope = torch.NewDisposeScope();
        var drop = random.Uniform().to(labels.device) < _dropoutProb;
        return torch.where(drop, torch.full_like(labels, _numClasses), labels).MoveToOuterDisposeScope();
    }

    /// <param name="labels">[B] int64 in [0, num_classes], num_classes being the null label.</param>
    /// <param name="generator">Draws the label dropout; used only in training mode. Without it, the per-sample
    /// streams of the training step in force (<see cref="GlobalBatch.Dropout"/>) draw it, else torch's global generator.</param>
    public Tensor Forward(Tensor labels, Generator? generator = null)
    {
        using var scope = torch.NewDisposeScope();
        var l = labels.to(ScalarType.Int64);
        if (training && _dropoutProb > 0)
            l = generator == null && GlobalBatch.Current?.Dropout is SampleRandom r ? DropLabels(l, r) : DropLabels(l, generator);
        return embedding_table.forward(l).MoveToOuterDisposeScope();
    }
}
