using System.CommandLine;
using System.Runtime.CompilerServices;
using SvgDiffusion.Runtime;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

/// <summary>
/// The one <c>--precision</c> of every inference command. The default <c>auto</c> is bf16 only on CPUs
/// with native bf16; elsewhere bf16 is emulated at about 1% of the fp32 speed, so auto keeps fp32 there
/// and the default changes no numbers on such machines.
/// </summary>
internal static class PrecisionOption
{
    // fp64 is allowed only where the whole computation can run in it (encode/decode); OptionRules asks here.
    static readonly ConditionalWeakTable<Option, object> WithFp64 = new();

    public static Option<string> Create(bool allowFp64 = false)
    {
        var o = new Option<string>("--precision")
        {
            Description = "Compute precision of the networks: auto (bf16 where the CPU has native bf16, AVX512-BF16 or AMX; else fp32), fp32, bf16"
                + (allowFp64 ? ", or fp64 (float64 throughout, no oneDNN kernel: the same numbers on every CPU, slow; for checking a machine)" : "")
                + ". Norm statistics, softmax, the timestep embedding, the final layer and the sampler stay fp32; outputs are written as fp32.",
            DefaultValueFactory = _ => "auto",
        };
        if (allowFp64) WithFp64.AddOrUpdate(o, new object());
        return o;
    }

    /// <summary>
    /// <c>--precision</c> of the training commands. Default fp32: training's numbers (and its bit-exact
    /// resume and data-parallel agreement) are fp32's unless mixed precision is asked for.
    /// </summary>
    public static Option<string> CreateForTraining(string bf16Scope) => new("--precision")
    {
        Description = "Training precision: fp32 (default), or bf16 mixed precision (" + bf16Scope + " in bf16; fp32 master weights, "
            + "optimiser state, losses and norm statistics; checkpoints are fp32 either way, and a run may resume in the other), "
            + "or auto (bf16 where the CPU has native bf16, AVX512-BF16 or AMX; else fp32).",
        DefaultValueFactory = _ => "fp32",
    };

    /// <summary>How a training command names the precision it runs in.</summary>
    public static string TrainingLabel(ScalarType t) => t == ScalarType.BFloat16 ? "bf16 mixed precision" : Precision.Name(t);

    public static bool AllowsFp64(Option o) => WithFp64.TryGetValue(o, out _);

    public static ScalarType Parse(ParseResult p, Option<string> o) => Precision.Resolve(p.GetValue(o)!, AllowsFp64(o));
}
