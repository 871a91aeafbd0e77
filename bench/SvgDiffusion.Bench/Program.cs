using System.Text.Json;
using SvgDiffusion.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

// The same measurements as `svgd bench`, as a plain console program:
// dotnet run -c Release --project bench/SvgDiffusion.Bench [-- --batch 8 --no-xl --json out.json]
// Peak memory of the DiT trainer against its estimate (see TrainMemoryBench): dotnet SvgDiffusion.Bench.dll train-memory --preset svg-xl --batch 1 --precision bf16
// Data-parallel training step and allreduce (see DataParallelBench): [mpiexec.mpich -n 2] dotnet SvgDiffusion.Bench.dll data-parallel --preset svg-xs
// SVG-XL training checkpoint, save and bit-exact resume (see CheckpointBench, bench/checkpoint-xl.sh): dotnet SvgDiffusion.Bench.dll checkpoint straight|resume --dir D
SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
if (args.Length > 0 && args[0] == "data-parallel") return DataParallelBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "checkpoint") return CheckpointBench.Run(args[1..]);
if (args.Length > 0 && args[0] == "train-memory") return TrainMemoryBench.Run(args[1..]);
var o = new BenchmarkOptions();
string? json = null;
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--batch": o = o with { Batch = int.Parse(args[++i]) }; break;
        case "--no-xl": o = o with { IncludeXl = false }; break;
        case "--fp32": o = o with { Dtypes = new[] { ScalarType.Float32 } }; break;
        case "--json": json = args[++i]; break;
        default: Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --batch N, --no-xl, --fp32, --json FILE)"); return 1;
    }
}
Console.WriteLine($"threads: {torch.get_num_threads()}");
var (p32, p16, physical, physical16, rows) = Benchmarks.Run(o, Console.WriteLine);
Console.WriteLine();
Console.WriteLine($"{"stage",-40} {"dtype",-5} {"batch",5} {"items/s",9} {"GFLOP/item",10} {"GFLOP/s",8} {"of physical",12} {"of library mm",14}");
foreach (var r in rows)
    Console.WriteLine($"{r.Name,-40} {r.Dtype,-5} {r.Batch,5} {r.ItemsPerSecond,9:F2} {r.GflopPerItem,10:F1} {r.Gflops,8:F1} {r.FractionOfPhysicalPeak,12:P1} {r.FractionOfDtypePeak,14:P1}");
if (json != null)
    File.WriteAllText(json, JsonSerializer.Serialize(new { physical_peak_fp32_gflops = physical, physical_peak_bf16_gflops = physical16, peak_fp32_gflops = p32, peak_bf16_gflops = p16, results = rows }, SvgDiffusion.Runtime.Finite.MetricsJson));
return 0;
