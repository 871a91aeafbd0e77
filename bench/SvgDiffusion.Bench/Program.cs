using System.Text.Json;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Models.Dinov3;
using TorchSharp;
using static TorchSharp.torch;

// Throughput of SvgDiffusion's components on this machine, as images/s and as a fraction of the
// measured 2048^3 matmul peak. Usage: dotnet run -c Release --project bench/SvgDiffusion.Bench [-- --batch 8 --json out.json]
SvgDiffusion.Runtime.TorchRuntime.EnsureInitialized();
int batch = 8;
string? json = null;
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--batch") batch = int.Parse(args[++i]);
    else if (args[i] == "--json") json = args[++i];
    else { Console.Error.WriteLine($"error: unknown argument '{args[i]}' (known: --batch N, --json FILE)"); return 1; }
}
torch.manual_seed(0);
Console.WriteLine($"threads: {torch.get_num_threads()}");
double peak32 = Throughput.MatmulPeakGflops(ScalarType.Float32);
double peak16 = Throughput.MatmulPeakGflops(ScalarType.BFloat16);
Console.WriteLine($"matmul 2048^3 peak: fp32 {peak32:F1} GFLOP/s, bf16 {peak16:F1} GFLOP/s");

var results = new List<ThroughputResult>();
var cfg = Dinov3Presets.Get("vits16plus");
double gflop = Dinov3Flops.PerImage(cfg, 256, 256) / 1e9;
foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
{
    using var model = new DinoVisionTransformer(cfg);
    model.eval();
    model.to(dtype);
    using var x = torch.randn(batch, 3, 256, 256).to(dtype);
    results.Add(Throughput.Measure("DINOv3 ViT-S+/16 256x256", dtype, batch, gflop, peak32,
        dtype == ScalarType.BFloat16 ? peak16 : peak32, () =>
        {
            using var _ = torch.inference_mode();
            using var o = model.Forward(x);
        }));
}

Console.WriteLine();
Console.WriteLine($"{"component",-28} {"dtype",-5} {"batch",5} {"img/s",8} {"GFLOP/img",10} {"GFLOP/s",8} {"of fp32 peak",13} {"of dtype peak",14}");
foreach (var r in results)
    Console.WriteLine($"{r.Name,-28} {r.Dtype,-5} {r.Batch,5} {r.ItemsPerSecond,8:F2} {r.GflopPerItem,10:F2} {r.Gflops,8:F1} {r.FractionOfFp32Peak,13:P1} {r.FractionOfDtypePeak,14:P1}");
if (json != null)
    File.WriteAllText(json, JsonSerializer.Serialize(new { peak_fp32_gflops = peak32, peak_bf16_gflops = peak16, results }, new JsonSerializerOptions { WriteIndented = true }));
return 0;
