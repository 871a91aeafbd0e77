using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;
using SvgDiffusion.Runtime;

namespace SvgDiffusion.Cli.Commands;

internal static class DoctorCommand
{
    public static Command Create(CliContext cli)
    {
        var json = new Option<bool>("--json") { Description = "Print the report as JSON (for scripts and bug reports) instead of tables." };
        var all = new Option<bool>("--all") { Description = "List every kernel check, not only a summary per kernel." };
        var cmd = new Command("doctor",
            "Check this machine's numerics: CPU and ISA flags, libtorch/oneDNN/MKL versions, every kernel the models use " +
            "against float64 references (fp32 and bf16, conv forward and backward), the conv path chosen, and matmul throughput. " +
            "Exit code 3 when a kernel is wrong on every path.") { json, all };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var report = Diagnosis.Run();
            if (p.GetValue(json))
            {
                var options = new JsonSerializerOptions
                {
                    WriteIndented = true,
                    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
                    PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
                };
                cli.Console.Profile.Out.Writer.WriteLine(JsonSerializer.Serialize(report, options));
            }
            else Print(cli.Console, report, p.GetValue(all));
            return report.Failed ? 3 : 0;
        }, checkKernels: false));
        return cmd;
    }

    static void Print(IAnsiConsole console, DiagnosisReport r, bool all)
    {
        var facts = new Table().Border(TableBorder.Simple).HideHeaders().AddColumn("").AddColumn("");
        void Fact(string k, string v) => facts.AddRow(Markup.Escape(k), Markup.Escape(v));
        Fact("CPU", $"{r.CpuModel} ({r.CpuVendor}, family {r.CpuFamily}, model {r.CpuModelNumber})");
        string Yes(params string[] flags) => flags.Any(f => r.IsaFlags.GetValueOrDefault(f)) ? "yes" : "no";
        Fact("ISA", $"AVX2 {Yes("avx2")}, AVX-512 {Yes("avx512f")}, AVX512-BF16 {Yes("avx512_bf16")}, AMX {Yes("amx_tile", "amx_bf16")}");
        Fact("flags", string.Join(' ', r.IsaFlags.Where(kv => kv.Value).Select(kv => kv.Key)));
        Fact("cores / threads", $"{r.LogicalCores} logical cores, {r.TorchThreads} torch threads");
        Fact("libtorch", $"{r.LibTorch} ({r.LibTorchPath})");
        Fact("oneDNN", r.OneDnn ?? "unknown");
        Fact("MKL", r.Mkl ?? "unknown");
        Fact("CPU capability", r.CpuCapability ?? "unknown");
        Fact("libstdc++", r.LibStdCxx);
        Fact("native kernels", r.NativeKernelsStatus ?? "unknown");
        Fact("malloc", r.Malloc);
        Fact("environment", r.KernelEnvironment.Count == 0 ? "(no ONEDNN_/MKL_/OMP_/SVGD_ variables)" : string.Join(' ', r.KernelEnvironment.Select(kv => $"{kv.Key}={kv.Value}")));
        Fact("machine key", r.MachineKey);
        console.Write(facts);

        var checks = new Table().Border(TableBorder.Simple).Title($"kernel checks on the chosen path ({r.Verdict.Results.Count} checks, {r.CheckSeconds:F2} s)");
        foreach (var c in new[] { "kernel", "case", "dtype", "error", "tolerance", "" }) checks.AddColumn(c);
        IEnumerable<KernelCheckResult> rows = all
            ? r.Verdict.Results
            // One row per kernel and dtype: the worst case, with how many cases it stands for.
            : r.Verdict.Results.GroupBy(c => (c.Kernel, c.Dtype)).Select(g => g.OrderByDescending(c => double.IsNaN(c.Error) ? double.MaxValue : c.Error).First() with
            {
                Case = g.Count() > 1 ? $"worst of {g.Count()}: {g.OrderByDescending(c => double.IsNaN(c.Error) ? double.MaxValue : c.Error).First().Case}" : g.First().Case,
            });
        foreach (var c in rows)
            checks.AddRow(Markup.Escape(c.Kernel), Markup.Escape(c.Case), c.Dtype, Err(c.Error), c.Tolerance.ToString("0.0e0"), c.Passed ? "[green]ok[/]" : "[red]WRONG[/]");
        console.Write(checks);

        var wrong = r.NativeConv.Where(c => !c.Passed).ToList();
        if (wrong.Count == 0)
            console.MarkupLine($"unpadded oneDNN convolutions: all {r.NativeConv.Count} checks right on this machine (the padding is a precaution here)");
        else
        {
            var channels = wrong.Select(c => c.Case.Split(',')[0]).Distinct();
            console.MarkupLine($"[yellow]unpadded oneDNN convolutions: {wrong.Count} of {r.NativeConv.Count} checks wrong[/] " +
                               $"(worst {Err(wrong.Max(c => double.IsNaN(c.Error) ? double.MaxValue : c.Error))}; {Markup.Escape(string.Join(", ", channels))})");
        }
        foreach (var reason in r.Verdict.Rejected) console.MarkupLine($"rejected: {Markup.Escape(reason)}");
        console.MarkupLine($"path: [bold]{Markup.Escape(KernelGuard.Describe(r.Verdict.Path))}[/]" +
                           (r.Verdict.AllPassed ? " [green](every check passes)[/]" : " [red](some checks fail on every path: results may be wrong)[/]"));
        console.MarkupLine($"physical fp32 peak: {r.PhysicalFp32Gflops:F1} GFLOP/s ({r.VectorBits}-bit FMA on {r.TorchThreads} threads)" +
                           (double.IsNaN(r.PhysicalBf16Gflops) ? "" : $"; bf16 {r.PhysicalBf16Gflops:F1} GFLOP/s ({(Evaluation.PhysicalPeak.Bf16Measured ? "VDPBF16PS, measured" : "estimated: twice fp32")})"));
        console.MarkupLine($"library matmul: fp32 {r.MatmulFp32Gflops:F1} GFLOP/s ({r.MatmulFp32Size}^3, {r.MatmulFp32Gflops / r.PhysicalFp32Gflops:P0} of physical), bf16 {r.MatmulBf16Gflops:F1} GFLOP/s ({r.MatmulBf16Size}^3)" +
                           (r.IsaFlags.GetValueOrDefault("avx512_bf16") || r.IsaFlags.GetValueOrDefault("amx_bf16") ? "" : "; no native bf16 on this CPU: fp32 is the fast precision here"));
        console.MarkupLine($"fp32 linears: {Markup.Escape(r.Fp32Gemm)}" +
                           (double.IsNaN(r.PackedSgemmGflops) ? "" : $"; {r.PackedSgemmGflops:F1} GFLOP/s on 512x1152 -> 4608 ({r.PackedSgemmGflops / r.PhysicalFp32Gflops:P0} of physical)"));
        console.MarkupLine($"bf16 linears (inference): {Markup.Escape(r.Bf16Gemm)}" +
                           (double.IsNaN(r.PackedBf16Gflops) ? "" : $"; {r.PackedBf16Gflops:F1} GFLOP/s on 512x1152 -> 4608 ({r.PackedBf16Gflops / r.PhysicalBf16Gflops:P0} of physical)"));
        console.MarkupLine($"bf16 attention (inference): {Markup.Escape(r.Bf16Attention)}");
        console.MarkupLine($"bf16 DiT blocks (inference): {Markup.Escape(r.Bf16DiTBlock)}");
        console.MarkupLine($"DiT inference elementwise: {Markup.Escape(r.DiTElementwise)}");
    }

    static string Err(double e) => double.IsNaN(e) ? "NaN" : e.ToString("0.00e0");
}
