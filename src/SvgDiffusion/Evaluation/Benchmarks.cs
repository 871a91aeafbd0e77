using SvgDiffusion.Models.Autoencoder;
using SvgDiffusion.Models.Diffusion;
using SvgDiffusion.Models.Dinov3;
using SvgDiffusion.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Evaluation;

public sealed record BenchmarkOptions
{
    public int Batch { get; init; } = 8;
    public IReadOnlyList<ScalarType> Dtypes { get; init; } = new[] { ScalarType.Float32, ScalarType.BFloat16 };
    /// <summary>The small DiT used for training and sampling rows.</summary>
    public string SmallDiT { get; init; } = "svg-s";
    /// <summary>Include SVG-XL forward rows (about 350 GFLOP per sample).</summary>
    public bool IncludeXl { get; init; } = true;
    /// <summary>SVG-XL forward at batch 1/2/4/8 on the 16x16 grid and at batch 1 on 32x32 (512 px): the cost curve.</summary>
    public bool Scaling { get; init; }
    public IReadOnlyList<int> SamplingSteps { get; init; } = new[] { 1, 5, 25 };
    public int Repeats { get; init; } = 3;
    /// <summary>A row stops repeating once its timed runs have taken this long (the default run's bound on its length).</summary>
    public double RowBudgetSeconds { get; init; } = double.PositiveInfinity;
}

/// <summary>
/// Memory of one training set-up in the bench: measured (heap in use) against <see cref="Training.TrainingMemory"/>'s estimate.
/// </summary>
/// <param name="BytesPerParameter">Heap the step keeps (weights, gradients, moments, compute copies) per parameter.</param>
/// <param name="ActivationBytesPerSample">Heap growth over the forward (the graph kept for the backward) per sample.</param>
/// <param name="PeakResidentBytes">Peak resident set of the row.</param>
public sealed record TrainingMemoryRow(string Setup, long Parameters, int Batch, double BytesPerParameter, double EstimatedBytesPerParameter,
    long ActivationBytesPerSample, long EstimatedActivationBytesPerSample, long EstimatedPeakBytes, long PeakResidentBytes);

/// <summary>
/// Throughput of every stage of SVG on random weights (speed does not depend on the values): encoder,
/// decoder, DiT forward, DiT training step and full sampling, each as items/s and as a fraction of the
/// measured matmul peak. Shared by <c>svgd bench</c> and the benchmark project.
/// </summary>
public static class Benchmarks
{

    /// <param name="memory">Receives one row per training set-up measured: bytes per parameter and activations per sample.</param>
    public static (double PeakFp32, double PeakBf16, double PhysicalFp32, double PhysicalBf16, List<ThroughputResult> Rows) Run(BenchmarkOptions o, Action<string>? log = null, List<TrainingMemoryRow>? memory = null)
    {
        memory ??= new List<TrainingMemoryRow>();
        double peak32 = Throughput.MatmulPeakGflops(ScalarType.Float32);
        // Without native bf16 instructions a 2048^3 bf16 matmul takes about a minute (0.3 GFLOP/s):
        // measure bf16 only when asked for, at the largest size that fits a few seconds.
        double peak16 = o.Dtypes.Contains(ScalarType.BFloat16) ? Throughput.MatmulGflopsWithin(ScalarType.BFloat16, budgetSeconds: 5).Gflops : double.NaN;
        // The yardstick is measured again after the rows and the best kept: one noisy moment must not
        // put rows above 100% of the physical peak.
        double physical32 = PhysicalPeak.Fp32Gflops(torch.get_num_threads(), seconds: 1, rounds: 10);
        // Emulated bf16 runs on the fp32 units: the fp32 peak is then its physical ceiling too.
        double physical16 = PhysicalPeak.Bf16Gflops(physical32) ?? physical32;
        log?.Invoke($"fp32 linears: {Runtime.Sgemm.Describe()}");
        log?.Invoke($"bf16 linears (inference): {Runtime.Bf16Gemm.Describe()}");
        log?.Invoke($"bf16 attention (inference): {Runtime.Bf16Attention.Describe()}");
        log?.Invoke($"bf16 DiT blocks (inference): {Runtime.Bf16DiTBlock.Describe()}");
        log?.Invoke($"DiT inference elementwise: {Runtime.FusedOps.Describe()}");
        log?.Invoke($"physical peak ({PhysicalPeak.VectorBits}-bit FMA, {torch.get_num_threads()} threads): fp32 {physical32:F1} GFLOP/s, bf16 {physical16:F1} GFLOP/s ({(PhysicalPeak.Bf16Measured ? "VDPBF16PS, measured" : "estimated: twice fp32")}); " +
                    $"library matmul: fp32 {peak32:F1} GFLOP/s (2048^3, {peak32 / physical32:P0} of physical), bf16 {(double.IsNaN(peak16) ? "not measured" : $"{peak16:F1} GFLOP/s")}");
        var rows = new List<ThroughputResult>();
        double Peak(ScalarType d) => d == ScalarType.BFloat16 ? peak16 : peak32;
        // Each row's peak resident set covers its set-up (models built, weights packed) and its runs.
        var meter = Runtime.ProcessMemory.Phase();
        void Add(ThroughputResult r)
        {
            r = r with { FractionOfPhysicalPeak = r.Gflops / (r.Dtype == "bf16" ? physical16 : physical32), PeakResidentBytes = meter.PeakBytes };
            rows.Add(r);
            var (heapUsed, heapFree) = Runtime.ProcessMemory.Heap();
            log?.Invoke($"{r.Name} {r.Dtype}: {r.ItemsPerSecond:F2}/s ({r.FractionOfPhysicalPeak:P1} of physical peak, {r.FractionOfDtypePeak:P1} of library matmul); " +
                        $"peak RSS {Runtime.ResourceBudget.Gib(r.PeakResidentBytes)} (row started at {Runtime.ResourceBudget.Gib(meter.StartBytes)}; heap now {Runtime.ResourceBudget.Gib(heapUsed)} in use, {Runtime.ResourceBudget.Gib(heapFree)} free)");
            // Tensors the row left to the GC (views, wrappers) hold native memory the GC does not see: freed
            // before the next row, whose peak should not include them.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Runtime.MallocTuning.Trim();
            meter = Runtime.ProcessMemory.Phase();
        }
        // A row whose estimated peak does not fit in available memory is skipped with one line (the process would
        // otherwise be killed, and every row after it lost).
        bool Fits(Training.MemoryEstimate need, string rows, string option)
        {
            if (need.Shortfall(option) is not string why) return true;
            log?.Invoke($"skipped {rows}: {why}");
            return false;
        }
        // The fp32 GEMM of the model linears against libtorch's on the DiT-XL MLP shape (one image with CFG).
        if (o.Dtypes.Contains(ScalarType.Float32))
        {
            using var scope = torch.NewDisposeScope();
            var lin = new Models.Common.PackedLinear(1152, 4608);
            var x = torch.randn(512, 1152);
            double gflop = 2.0 * 512 * 1152 * 4608 / 1e9;
            void Forward() { using var _ = torch.inference_mode(); using var y = lin.forward(x); }
            if (Runtime.Sgemm.Enabled) Add(Throughput.Measure("linear 512x1152 -> 4608 (packed AVX-512)", ScalarType.Float32, 1, gflop, peak32, peak32, Forward, 1, 5));
            using (Runtime.Sgemm.Suspend())
                Add(Throughput.Measure("linear 512x1152 -> 4608 (libtorch)", ScalarType.Float32, 1, gflop, peak32, peak32, Forward, 1, 5));
        }
        // The same shape in bf16: the native AVX512-BF16 GEMM against libtorch's (MKL's).
        if (o.Dtypes.Contains(ScalarType.BFloat16))
        {
            using var scope = torch.NewDisposeScope();
            var lin = new Models.Common.PackedLinear(1152, 4608);
            lin.to(ScalarType.BFloat16);
            var x = torch.randn(512, 1152).to(ScalarType.BFloat16);
            double gflop = 2.0 * 512 * 1152 * 4608 / 1e9;
            void Forward() { using var _ = torch.inference_mode(); using var y = lin.forward(x); }
            if (Runtime.Bf16Gemm.Enabled) Add(Throughput.Measure("linear 512x1152 -> 4608 (packed AVX512-BF16)", ScalarType.BFloat16, 1, gflop, peak32, peak16, Forward, 1, 5));
            using (Runtime.Bf16Gemm.Suspend())
                Add(Throughput.Measure("linear 512x1152 -> 4608 (libtorch)", ScalarType.BFloat16, 1, gflop, peak32, peak16, Forward, 1, 5));
        }
        int b = o.Batch;
        var small = DiTPresets.Get(o.SmallDiT);
        int tokens = small.InputSize * small.InputSize;

        foreach (var dtype in o.Dtypes)
        {
            torch.manual_seed(0);
            // Encoder: DINOv3 ViT-S+/16 at 256x256.
            var dcfg = Dinov3Presets.Get("vits16plus");
            using (var enc = new DinoVisionTransformer(dcfg))
            using (var x = torch.randn(b, 3, 256, 256).to(dtype))
            {
                enc.eval(); enc.to(dtype);
                Add(Throughput.Measure("encoder DINOv3 ViT-S+/16 256px", dtype, b, Dinov3Flops.PerImage(dcfg, 256, 256) / 1e9, peak32, Peak(dtype),
                    () => { using var _ = torch.inference_mode(); using var f = enc.Forward(x); }, 1, o.Repeats, o.RowBudgetSeconds));
            }
            // Decoder of the released autoencoder: 16x16x392 -> 256x256.
            var dec = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.DinoV3ViTSPlus16).Decoder;
            using (var decoder = new Decoder(dec))
            using (var z = torch.randn(b, dec.ZChannels, 16, 16).to(dtype))
            {
                decoder.eval(); decoder.to(dtype);
                Add(Throughput.Measure("decoder 16x16x392 -> 256px", dtype, b, Flops.Decoder(dec) / 1e9, peak32, Peak(dtype),
                    () => { using var _ = torch.inference_mode(); using var y = decoder.Forward(z); }, 1, o.Repeats, o.RowBudgetSeconds));
            }
            // DiT forward.
            var ditRuns = new List<(string Name, DiTConfig Cfg, int Batch)> { ($"DiT {o.SmallDiT} forward 16x16", small, b) };
            var xl = DiTPresets.Get("svg-xl");
            if (o.IncludeXl) ditRuns.Add(("DiT svg-xl forward 16x16", xl, 1));
            if (o.Scaling)
            {
                foreach (int bb in new[] { 2, 4, 8 }) ditRuns.Add(("DiT svg-xl forward 16x16", xl, bb));
                ditRuns.Add(("DiT svg-xl forward 32x32 (512 px)", xl with { InputSize = 32 }, 1));
            }
            foreach (var (name, cfg, bb) in ditRuns)
            {
                if (!Fits(Training.TrainingMemory.DiTInference(cfg, bb, dtype == ScalarType.BFloat16), $"'{name}' {Runtime.KernelCheck.DtypeName(dtype)} batch {bb}", "--batch-size")) continue;
                using var dit = new DiT(cfg);
                dit.eval(); dit.to(dtype);
                using var x = torch.randn(bb, cfg.InputSize * cfg.InputSize, cfg.InChannels).to(dtype);
                using var t = torch.rand(bb).to(dtype);
                using var y = torch.zeros(bb, dtype: ScalarType.Int64);
                Add(Throughput.Measure(name, dtype, bb, Flops.DiT(cfg, cfg.InputSize * cfg.InputSize) / 1e9, peak32, Peak(dtype),
                    () => { using var _ = torch.inference_mode(); using var v = dit.Forward(x, t, y); }, 1, o.Repeats, o.RowBudgetSeconds));
            }
        }

        // Training step (fp32, as the reference trains): forward + backward + AdamW, about 3x the forward FLOPs.
        // The bf16 mixed step reuses the fp32 model as its master weights, so the pair is one estimate.
        bool mixedRow = o.Dtypes.Contains(ScalarType.BFloat16);
        var trainNeed = Training.TrainingMemory.DiT(small, b, bf16Mixed: mixedRow, ema: false, name: o.SmallDiT);
        if (Fits(trainNeed, $"the DiT {o.SmallDiT} training step rows", "--batch-size"))
        {
            long heapBase = Runtime.ProcessMemory.Heap().InUse;
            using var dit = new DiT(small);
            dit.train();
            using var opt = new Training.Lean.AdamW(dit.parameters(), 1e-4, 0.9, 0.999, 0);
            var flow = new RectifiedFlow();
            using var x1 = torch.randn(b, tokens, small.InChannels);
            using var y = torch.zeros(b, dtype: ScalarType.Int64);
            // Heap in use at the start of each run and after its forward: the state the step keeps (weights, gradients,
            // moments) and the activations its graph holds, without the heap's retained free space that RSS includes.
            var samples = new List<(long Start, long Forward)>();
            Add(Throughput.Measure($"DiT {o.SmallDiT} training step", ScalarType.Float32, b, 3 * Flops.DiT(small, tokens) / 1e9, peak32, peak32, () =>
            {
                using var scope = torch.NewDisposeScope();
                long start = Runtime.ProcessMemory.Heap().InUse;
                opt.zero_grad();
                using var l = flow.RandomLoss(dit, x1, y);
                samples.Add((start, Runtime.ProcessMemory.Heap().InUse));
                l.Loss.backward();
                opt.step();
            }, 1, o.Repeats, o.RowBudgetSeconds));
            LogTrainingMemory(Training.TrainingMemory.DiT(small, b, bf16Mixed: false, ema: false, name: o.SmallDiT), samples, heapBase, rows[^1].PeakResidentBytes);
            if (mixedRow)
            {
                // The same step in `train --precision bf16`: a bf16 compute copy, fp32 master weights and AdamW.
                using var compute = new DiT(small);
                compute.SetComputePrecision(ScalarType.BFloat16);
                compute.train();
                var mixed = new Training.MixedPrecision(dit, compute);
                samples.Clear();
                Add(Throughput.Measure($"DiT {o.SmallDiT} training step (bf16 mixed)", ScalarType.BFloat16, b, 3 * Flops.DiT(small, tokens) / 1e9, peak32, Peak(ScalarType.BFloat16), () =>
                {
                    using var scope = torch.NewDisposeScope();
                    long start = Runtime.ProcessMemory.Heap().InUse;
                    mixed.DropMasterGradients();
                    mixed.PullWeights();
                    // The forward's growth from here: the master gradients just dropped are not the forward's.
                    long beforeForward = Runtime.ProcessMemory.Heap().InUse;
                    using var l = flow.RandomLoss(compute, x1, y);
                    samples.Add((start, start + Runtime.ProcessMemory.Heap().InUse - beforeForward));
                    l.Loss.backward();
                    mixed.PushGradients();
                    opt.step();
                }, 1, o.Repeats, o.RowBudgetSeconds));
                LogTrainingMemory(trainNeed, samples, heapBase, rows[^1].PeakResidentBytes);
            }
        }

        // One line per training set-up: bytes per parameter and activations per sample as measured (heap in use),
        // beside the estimate the training commands check before they start.
        void LogTrainingMemory(Training.MemoryEstimate estimate, List<(long Start, long Forward)> samples, long heapBase, long peakRss)
        {
            if (samples.Count < 2 || samples[1].Start == 0) return;
            // The second run starts with everything the step keeps (the first makes the gradients and moments).
            double perParam = (samples[1].Start - heapBase) / (double)estimate.Parameters;
            long perSample = (samples[1].Forward - samples[1].Start) / Math.Max(1, estimate.Batch);
            memory.Add(new TrainingMemoryRow(estimate.Setup, estimate.Parameters, estimate.Batch, perParam, estimate.BytesPerParameter, perSample, estimate.ActivationBytesPerSample, estimate.PeakBytes, peakRss));
            log?.Invoke($"memory, {estimate.Setup}: {perParam:F1} bytes/param (estimate {estimate.BytesPerParameter:F0}), forward activations {Runtime.ResourceBudget.Gib(perSample)}/sample " +
                        $"(estimate with backward {Runtime.ResourceBudget.Gib(estimate.ActivationBytesPerSample)}); peak RSS {Runtime.ResourceBudget.Gib(peakRss)} (estimate {Runtime.ResourceBudget.Gib(estimate.PeakBytes)})");
        }

        // Full sampling per image: DiT with CFG (two forwards a step, batched) + decoder.
        foreach (var dtype in o.Dtypes)
        {
            var dec = SvgAutoencoderPresets.Get(SvgAutoencoderPresets.DinoV3ViTSPlus16).Decoder;
            if (!Fits(Training.TrainingMemory.DiTInference(small, 2 * b, dtype == ScalarType.BFloat16, o.SmallDiT), $"the sampling rows ({Runtime.KernelCheck.DtypeName(dtype)})", "--batch-size")) continue;
            using var dit = new DiT(small);
            using var decoder = new Decoder(dec);
            // The mix `sample --precision` runs: fp32 noise, sampler and final layer around bf16 blocks.
            dit.eval(); dit.SetComputePrecision(dtype); decoder.eval(); decoder.to(dtype);
            using var z = torch.randn(b, tokens, small.InChannels);
            using var cond = torch.zeros(b, dtype: ScalarType.Int64);
            using var nul = torch.full(b, small.NumClasses, dtype: ScalarType.Int64);
            // The first forward of a model packs its weights for our GEMMs (once per loaded model, as at
            // the start of `svgd sample`); it is reported here, not folded into the timed sampling rows.
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                using var _ = torch.inference_mode();
                using var t = torch.full(2 * b, 0.5f);
                using var zz = torch.cat(new[] { z, z });
                using var yy = torch.cat(new[] { cond, nul });
                using var v = dit.Forward(zz, t, yy);
                log?.Invoke($"{o.SmallDiT} {Runtime.KernelCheck.DtypeName(dtype)}: first forward (packs the weights, once per loaded model) {sw.Elapsed.TotalSeconds:F2} s");
            }
            foreach (int steps in o.SamplingSteps)
            {
                var sampler = Sampler.Create("euler", steps);
                var guidance = GuidanceSchedule.Constant(1.5);
                double gflop = (steps * 2 * Flops.DiT(small, tokens) + Flops.Decoder(dec)) / 1e9;
                Add(Throughput.Measure($"sample {o.SmallDiT} {steps} step(s) + decode", dtype, b, gflop, peak32, Peak(dtype), () =>
                {
                    using var _ = torch.inference_mode();
                    using var tok = sampler.Sample(dit, z, cond, nul, guidance);
                    using var lat = DiT.TokensToLatent(tok, small.InputSize, small.InputSize);
                    using var img = decoder.Forward(lat.to(dtype));
                    // No warm-up run: the rows above already built this DiT's and decoder's kernels (same shapes),
                    // and one timed run (--full: up to --repeats) keeps the default bench within its few minutes.
                }, 0, o.Scaling ? Math.Min(o.Repeats, steps >= 25 ? 1 : o.Repeats) : 1));
            }
        }
        double again = PhysicalPeak.Fp32Gflops(torch.get_num_threads(), seconds: 1, rounds: 10);
        double again16 = PhysicalPeak.Bf16Gflops(again) ?? again;
        if (again > physical32 || again16 > physical16)
        {
            log?.Invoke($"physical peaks measured again after the rows: fp32 {again:F1} GFLOP/s (was {physical32:F1}), bf16 {again16:F1} (was {physical16:F1}); fractions use the higher");
            physical32 = Math.Max(physical32, again);
            physical16 = Math.Max(physical16, again16);
            for (int i = 0; i < rows.Count; i++)
                rows[i] = rows[i] with { FractionOfPhysicalPeak = rows[i].Gflops / (rows[i].Dtype == "bf16" ? physical16 : physical32) };
        }
        return (peak32, peak16, physical32, physical16, rows);
    }
}
