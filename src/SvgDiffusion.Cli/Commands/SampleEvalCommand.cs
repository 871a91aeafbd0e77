using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Distributed;
using SvgDiffusion.Evaluation;
using SvgDiffusion.Sampling;
using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Cli.Commands;

internal static class SampleEvalCommand
{
    public static Command Create(CliContext cli)
    {
        var dit = new DiTOptions();
        var ae = new AutoencoderOptions();
        var features = new FeatureNetworkOptions();
        var n = new Option<int>("--n") { Description = "Number of samples (50,000 for numbers comparable with the literature).", DefaultValueFactory = _ => 50000 };
        var labels = new Option<string>("--labels") { Description = "random: uniformly random labels (the ADM/SiT protocol); balanced: n/classes per class.", DefaultValueFactory = _ => "random" };
        var output = new Option<string>("--out") { Description = "Statistics .npz (mu, sigma) of the samples' features; shards go to <out>.shards/ and make the run resumable.", Required = true }.OutputFile();
        var reference = new Option<string?>("--ref") { Description = "Reference statistics (.npz, e.g. VIRTUAL_imagenet256_labeled.npz) or image folder: report the distance at the end." };
        var shard = new Option<int>("--shard-size") { Description = "Samples per resumable shard.", DefaultValueFactory = _ => 1000 };
        var batch = new Option<int>("--batch-size") { Description = "Samples per solver pass.", DefaultValueFactory = _ => 32 };
        var precision = PrecisionOption.Create();
        var cmd = new Command("sample-eval", "Sample n images and stream their features into FID statistics (and Inception Score; with --feature-network evaluator, class accuracy and precision/recall), resumable in shards, without keeping images; shards spread over the processes under mpiexec.") { n, labels, output, reference, shard, batch, precision };
        foreach (var o in dit.All.Concat(ae.All).Concat(features.All)) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            int total = p.GetValue(n), shardSize = p.GetValue(shard), bs = p.GetValue(batch);
            if (total < 2) throw new SvgdException("--n must be at least 2");
            Runtime.ResourceBudget.RequireAtMost("--steps", p.GetValue(dit.Steps), dit.Limits(p).MaxSteps, allowLarge: false);
            string mode = p.GetValue(labels)!.ToLowerInvariant();
            if (mode is not ("random" or "balanced")) throw new SvgdException($"--labels must be random or balanced, not '{mode}'");
            string outPath = p.GetValue(output)!, shardDir = outPath + ".shards";
            var comm = cli.Comm;
            if (cli.IsRoot) Directory.CreateDirectory(shardDir);
            using var model = dit.LoadModel(p);
            using var stats = dit.LoadStatistics(p, model.Config.InChannels);
            // Generated images are decoded, never encoded: the frozen encoder is not loaded.
            using var autoencoder = ae.LoadAny(p, decodeOnly: true);
            using var net = features.Create(p);
            var dtype = PrecisionOption.Parse(p, precision);
            // The feature network stays fp32 whatever --precision says: the metric must not move with the precision it measures.
            // Per-sample features for k-NN precision/recall: only for the evaluator, whose features are small.
            bool keepFeatures = net is EvaluatorFeatureNetwork;
            var generator = new SvgGenerator(model, dit.CreateSampler(p), dit.CreateGuidance(p), stats, autoencoder).SetPrecision(dtype);
            long seed = p.GetValue(dit.Seed);
            int classes = model.Config.NumClasses;
            int Label(int i) => mode == "balanced" ? i % classes : generator.RandomLabel(seed, i);

            // A shard records what produced it, so a resume with other settings is refused instead of mixed in.
            // The resolved precision, not the option: auto on two machines can differ. fp32 adds nothing, so shards written before --precision existed still resume.
            object settings = new { model = p.GetValue(dit.Model), steps = p.GetValue(dit.Steps), cfg = p.GetValue(dit.Cfg), guidance = p.GetValue(dit.Guidance), sampler = p.GetValue(dit.Solver), shift = p.GetValue(dit.Shift), seed, mode, net = net.Label, shardSize };
            string fingerprint = JsonSerializer.Serialize(settings);
            if (dtype != ScalarType.Float32) fingerprint = fingerprint[..^1] + $",\"precision\":\"{Runtime.Precision.Name(dtype)}\"}}";
            int shards = (total + shardSize - 1) / shardSize;
            // Every process must sample with the same settings and weights: a mismatch would mix two evaluations.
            Replicas.CheckSameSettings(comm, "sampling settings, model or feature network", string.Join("\n",
                $"settings {fingerprint}", $"n {total}", $"model {Replicas.Checksum(model.state_dict())}", $"autoencoder {Replicas.Checksum(autoencoder.Module.state_dict())}",
                $"latent statistics {(stats == null ? "none" : Replicas.Checksum(new[] { KeyValuePair.Create("mean", stats.Mean), KeyValuePair.Create("std", stats.Std) }))}"));
            // Rank 0 owns the shard folder: it finds the finished shards and tells the others.
            var done = new HashSet<int>();
            if (cli.IsRoot)
            {
                done = Enumerable.Range(0, shards).Where(k => File.Exists(ShardPath(shardDir, k))).ToHashSet();
                foreach (int k in done)
                {
                    var meta = SafeTensors.ReadHeader(ShardPath(shardDir, k)).Metadata;
                    if (!meta.TryGetValue("svgd.fingerprint", out var f) || f != fingerprint)
                        throw new SvgdException($"{ShardPath(shardDir, k)}: made with other settings; use another --out or delete {shardDir}");
                }
            }
            var doneBytes = comm.Broadcast(cli.IsRoot ? done.Order().SelectMany(BitConverter.GetBytes).ToArray() : null);
            done = Enumerable.Range(0, doneBytes.Length / 4).Select(i => BitConverter.ToInt32(doneBytes, 4 * i)).ToHashSet();
            if (done.Count > 0) cli.Console.MarkupLine($"resuming: {done.Count} of {shards} shards already done");
            var sw = System.Diagnostics.Stopwatch.StartNew();
            long sampled = 0;
            bool alone = comm.Size == 1;

            // A shard's moments depend on its samples alone (noise and label from the sample index), so any process can compute it.
            Dictionary<string, Tensor> Shard(int k, Action<long>? step)
            {
                int start = k * shardSize, count = Math.Min(shardSize, total - start);
                using var moments = new FeatureMoments(net.Dim);
                var probs = new List<Tensor>();
                var kept = new List<Tensor>();
                for (int s = start; s < start + count; s += bs)
                {
                    using var scope = torch.NewDisposeScope();
                    int m = Math.Min(bs, start + count - s);
                    var noise = torch.stack(Enumerable.Range(s, m).Select(i => generator.Noise(seed, i)).ToArray());
                    var latents = generator.SampleLatents(noise, Enumerable.Range(s, m).Select(Label).ToList());
                    var images01 = (generator.Decode(latents) + 1) / 2;
                    var f = net.Features(images01);
                    moments.Add(f);
                    if (keepFeatures) kept.Add(f.MoveToOuterDisposeScope());
                    if (net.Logits(f) is Tensor logits) probs.Add(nn.functional.softmax(logits.to(ScalarType.Float64), 1).to(ScalarType.Float32).MoveToOuterDisposeScope());
                    step?.Invoke(m);
                }
                var tensors = new Dictionary<string, Tensor> { ["sum"] = moments.Sum.clone(), ["outer_sum"] = moments.OuterSum.clone(), ["count"] = torch.tensor(new[] { moments.Count }) };
                if (probs.Count > 0) tensors["probs"] = torch.cat(probs, 0);
                if (kept.Count > 0) tensors["features"] = torch.cat(kept, 0);
                tensors["labels"] = torch.tensor(Enumerable.Range(start, count).Select(i => (long)Label(i)).ToArray());
                foreach (var t in probs.Concat(kept)) t.Dispose();
                return tensors;
            }

            ProgressBars.Run(cli.Console, $"sample-eval ({net.Label})", total, step =>
            {
                step(done.Sum(k => Math.Min(shardSize, total - k * shardSize)));
                var todo = Enumerable.Range(0, shards).Where(k => !done.Contains(k)).ToList();
                // One process reports every batch; a job reports each shard as it reaches rank 0.
                ShardedWork.Run(comm, todo, k => Shard(k, alone ? step : null), (k, tensors) =>
                {
                    SafeTensors.Save(ShardPath(shardDir, k), tensors, new Dictionary<string, string> { ["svgd.fingerprint"] = fingerprint });
                    long count = tensors["count"].item<long>();
                    if (!alone) step(count);
                    sampled += count;
                });
            });
            if (!cli.IsRoot) return 0;
            if (sampled > 0) cli.Console.MarkupLine($"{sampled} samples in {sw.Elapsed.TotalSeconds:F0} s ({sampled / sw.Elapsed.TotalSeconds:F2} samples/s)");

            using var all = new FeatureMoments(net.Dim);
            var allProbs = new List<Tensor>();
            var allFeatures = new List<Tensor>();
            var allLabels = new List<Tensor>();
            for (int k = 0; k < shards; k++)
            {
                using var part = FeatureMoments.Load(ShardPath(shardDir, k));
                all.Merge(part);
                var t = SafeTensors.Load(ShardPath(shardDir, k));
                if (t.TryGetValue("probs", out var pr)) allProbs.Add(pr);
                if (t.TryGetValue("features", out var fe)) allFeatures.Add(fe);
                if (t.TryGetValue("labels", out var la)) allLabels.Add(la);
            }
            using var result = all.ToStatistics(cli.Warn, outPath);
            result.Save(outPath);
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(outPath)}[/] ({all.Count} samples, {net.Label} features)");
            if (allProbs.Count > 0)
            {
                using var probsAll = torch.cat(allProbs, 0);
                if (net is EvaluatorFeatureNetwork)
                {
                    // The evaluator's classes are the model's: the share of samples it assigns to the class that was asked for.
                    if (allLabels.Count == shards)
                    {
                        using var asked = torch.cat(allLabels, 0);
                        double acc = probsAll.argmax(1).eq(asked).to(ScalarType.Float64).mean().item<double>();
                        cli.Console.MarkupLine($"[bold]class accuracy[/] (evaluator): {acc:P2}");
                    }
                }
                else
                {
                    var isc = InceptionScore.FromProbabilities(probsAll);
                    cli.Console.MarkupLine($"[bold]Inception Score[/]: {isc.Mean:F2} ± {isc.Std:F2}");
                }
            }
            if (p.GetValue(reference) is string refPath)
            {
                using var refStats = refPath.EndsWith(".npz", StringComparison.OrdinalIgnoreCase) ? FidStatistics.Load(refPath)
                    : FeatureNetworkOptions.FolderMoments(net, refPath, bs).ToStatistics(cli.Warn, refPath);
                double d = FrechetDistance.Compute(result, refStats, warn: cli.Warn);
                cli.Console.MarkupLine($"[bold]{net.Label}[/] vs {Markup.Escape(refPath)}: {d:F4}");
                if (keepFeatures && allFeatures.Count == shards && Directory.Exists(refPath))
                {
                    using var fake = torch.cat(allFeatures, 0);
                    using var real = FeatureNetworkOptions.FolderFeatures(net, refPath, bs);
                    var pr = PrecisionRecall.Compute(real, fake);
                    cli.Console.MarkupLine($"[bold]precision[/] {pr.Precision:F4}, [bold]recall[/] {pr.Recall:F4} (k = {pr.K}, {pr.RealCount} reference images)");
                }
            }
            return 0;
        }));
        return cmd;
    }

    static string ShardPath(string dir, int k) => Path.Combine(dir, $"shard-{k:D5}.safetensors");
}
