using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class BenchCommand
{
    public static Command Create(CliContext cli)
    {
        var batch = new Option<int>("--batch-size") { Description = "Batch of the encoder, decoder, small-DiT and sampling rows (SVG-XL runs batch 1).", DefaultValueFactory = _ => 8 };
        var dtypes = new Option<string?>("--dtype") { Description = "Precisions to measure: fp32, bf16 or fp32,bf16 (default: fp32, plus bf16 where the CPU has native bf16; --full: both)." };
        var dit = new Option<string>("--dit-preset") { Description = "DiT for the small forward, training and sampling rows.", DefaultValueFactory = _ => "svg-s" };
        var noXl = new Option<bool>("--no-xl") { Description = "Skip the SVG-XL forward rows." };
        var steps = new Option<string?>("--steps") { Description = "Sampling step counts to time (default 1,5; --full: 1,5,25)." };
        var full = new Option<bool>("--full") { Description = "Everything: both precisions, 25-step sampling, and SVG-XL scaling rows (batch 1/2/4/8 at 16x16, and 32x32 = 512 px). The default run stays under a few minutes." };
        var repeats = new Option<int>("--repeats") { Description = "Timed repetitions per row (median reported). Without --full a row stops repeating once its timed runs have taken 12 s.", DefaultValueFactory = _ => 3 };
        var json = new Option<string>("--json") { Description = "Where to write the results as JSON.", DefaultValueFactory = _ => "bench.json" };
        var cmd = new Command("bench", "Measure throughput of encoder, decoder, DiT forward, training step and full sampling, in fp32 and bf16, against this machine's matmul peak.") { batch, dtypes, dit, noXl, steps, full, repeats, json };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            bool everything = p.GetValue(full);
            string dtypeList = p.GetValue(dtypes) ?? (everything || SvgDiffusion.Runtime.CpuInfo.Current.NativeBf16 ? "fp32,bf16" : "fp32");
            var opts = new BenchmarkOptions
            {
                Batch = p.GetValue(batch),
                Scaling = everything && !p.GetValue(noXl),
                Dtypes = dtypeList.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(FeaturesCommand.ParseDtype).Distinct().ToArray(),
                SmallDiT = p.GetValue(dit)!,
                IncludeXl = !p.GetValue(noXl),
                SamplingSteps = (p.GetValue(steps) ?? (everything ? "1,5,25" : "1,5")).Split(',', StringSplitOptions.RemoveEmptyEntries).Select(s => int.TryParse(s, out int v) && v > 0 ? v : throw new SvgdException($"--steps: '{s}' is not a positive integer")).ToArray(),
                Repeats = p.GetValue(repeats),
                // Keeps the default run to its few minutes on a noisy machine; --full times every repeat.
                RowBudgetSeconds = everything ? double.PositiveInfinity : 12,
            };
            cli.Console.MarkupLine($"threads: {torch.get_num_threads()}");
            var memory = new List<TrainingMemoryRow>();
            var (p32, p16, physical, physical16, rows) = Benchmarks.Run(opts, m => cli.Console.MarkupLine(Markup.Escape(m)), memory);
            var table = new Table().Border(TableBorder.Simple).Title($"physical peak fp32 {physical:F0} GFLOP/s, bf16 {physical16:F0}; library matmul fp32 {p32:F0} GFLOP/s, bf16 {(double.IsNaN(p16) ? "not measured" : $"{p16:F0} GFLOP/s")}");
            foreach (var c in new[] { "stage", "dtype", "batch", "items/s", "ms/item", "GFLOP/item", "GFLOP/s", "of physical peak", "of library matmul", "peak RSS" }) table.AddColumn(c);
            foreach (var r in rows)
                table.AddRow(Markup.Escape(r.Name), r.Dtype, r.Batch.ToString(), r.ItemsPerSecond.ToString("F2"), (1000 / r.ItemsPerSecond).ToString("F1"),
                    r.GflopPerItem.ToString("F1"), r.Gflops.ToString("F1"), r.FractionOfPhysicalPeak.ToString("P1"), r.FractionOfDtypePeak.ToString("P1"),
                    r.PeakResidentBytes > 0 ? SvgDiffusion.Runtime.ResourceBudget.Gib(r.PeakResidentBytes) : "-");
            cli.Console.Write(table);
            if (memory.Count > 0)
            {
                // Measured: heap kept by the step per parameter, heap growth over the forward per sample, the row's peak RSS.
                var mem = new Table().Border(TableBorder.Simple).Title("training memory: measured (estimate the training commands check)");
                foreach (var c in new[] { "set-up", "params", "batch", "bytes/param", "activations/sample (forward)", "peak RSS" }) mem.AddColumn(c);
                foreach (var m in memory)
                    mem.AddRow(Markup.Escape(m.Setup), m.Parameters.ToString("N0"), m.Batch.ToString(), $"{m.BytesPerParameter:F1} ({m.EstimatedBytesPerParameter:F0})",
                        $"{SvgDiffusion.Runtime.ResourceBudget.Gib(m.ActivationBytesPerSample)} ({SvgDiffusion.Runtime.ResourceBudget.Gib(m.EstimatedActivationBytesPerSample)} with backward)",
                        $"{SvgDiffusion.Runtime.ResourceBudget.Gib(m.PeakResidentBytes)} ({SvgDiffusion.Runtime.ResourceBudget.Gib(m.EstimatedPeakBytes)})");
                cli.Console.Write(mem);
            }
            string text = JsonSerializer.Serialize(new { threads = torch.get_num_threads(), physical_peak_fp32_gflops = physical, physical_peak_bf16_gflops = physical16, peak_fp32_gflops = p32, peak_bf16_gflops = p16, results = rows, training_memory = memory }, SvgDiffusion.Runtime.Finite.MetricsJson);
            AtomicFile.Write(p.GetValue(json)!, fs => fs.Write(System.Text.Encoding.UTF8.GetBytes(text)));
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(p.GetValue(json)!)}[/]");
            return 0;
        }));
        return cmd;
    }
}
