using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// Random draws keyed by sample, not by process: sample k of the global batch of step s draws from a
/// generator of its own, seeded from (seed, s, stream, k). A process holding samples [first, first + count)
/// therefore draws for them exactly what a single process holding the whole batch draws, whatever the
/// number of processes — the condition for N ranks to compute the update of one.
/// </summary>
public sealed class SampleRandom : IDisposable
{
    readonly Generator[] _generators;

    /// <summary>Global index of this shard's first sample.</summary>
    public int First { get; }
    public int Count => _generators.Length;

    public SampleRandom(long seed, long step, int stream, int first, int count)
    {
        if (first < 0 || count < 0) throw new ArgumentOutOfRangeException(nameof(count), "a shard needs first >= 0 and count >= 0");
        First = first;
        _generators = new Generator[count];
        for (int i = 0; i < count; i++) _generators[i] = new Generator(Seed(seed, step, stream, first + i));
    }

    /// <summary>The generator of the shard's i-th sample (global index First + i).</summary>
    public Generator this[int i] => _generators[i];

    /// <summary>A seed for (seed, step, stream, sample): SplitMix64 over the four, so nearby keys give unrelated streams.</summary>
    public static ulong Seed(long seed, long step, int stream, long sample)
    {
        ulong h = 0x9E3779B97F4A7C15UL;
        foreach (long v in new[] { seed, step, stream, sample }) h = Mix(h ^ (ulong)v);
        // torch's CPU generator takes the seed as a signed 64-bit value in places: keep it positive.
        return h & long.MaxValue;
    }

    static ulong Mix(ulong z)
    {
        unchecked
        {
            z += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    Tensor PerSample(Func<Generator, Tensor> draw)
    {
        using var scope = torch.NewDisposeScope();
        if (Count == 0) throw new InvalidOperationException("a shard of no samples draws nothing");
        return torch.stack(_generators.Select(draw).ToArray()).MoveToOuterDisposeScope();
    }

    /// <summary>[Count, ...shape] float32, uniform on [0, 1).</summary>
    public Tensor Uniform(params long[] shape) => PerSample(g => torch.rand(shape, generator: g));

    /// <summary>[Count, ...shape] float32, standard normal.</summary>
    public Tensor Normal(params long[] shape) => PerSample(g => torch.randn(shape, generator: g));

    /// <summary>Inverted-dropout factors [Count, ...shape]: 0 with probability p, else 1 / (1 - p).</summary>
    public Tensor DropoutScale(double p, long[] shape, ScalarType dtype, Device device)
    {
        using var scope = torch.NewDisposeScope();
        var keep = (Uniform(shape) >= p).to(dtype, device);
        return (keep / (1 - p)).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        foreach (var g in _generators) g.Dispose();
    }
}
