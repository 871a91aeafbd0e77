using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SvgDiffusion.Training;

/// <summary>
/// One-file training state: module weights under prefixes, optimiser states tensor by tensor, and JSON
/// metadata, written atomically so a kill during a save leaves the previous checkpoint intact.
/// </summary>
public static class RunCheckpoint
{
    /// <summary>A metadata value of a training checkpoint, or one line naming the file and the missing key.</summary>
    public static string Metadata(IReadOnlyDictionary<string, string> meta, string key, string path) =>
        meta.TryGetValue(key, out var v) ? v : throw new SvgdException($"{path}: training checkpoint metadata lacks '{key}'");

    /// <summary>A config stored as JSON in the metadata; a damaged one is one line naming the file and key.</summary>
    public static T Config<T>(IReadOnlyDictionary<string, string> meta, string key, string path) =>
        SvgDiffusion.Config.ConfigJson.ParseText<T>(Metadata(meta, key, path), $"{path} metadata '{key}'");

    /// <summary>The step count stored in the metadata.</summary>
    public static int Step(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        string v = Metadata(meta, key, path);
        return int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int step)
            ? step : throw new SvgdException($"{path}: metadata '{key}' is '{v}', not a step number");
    }

    /// <summary>The number of processes that trained a run (1 when the checkpoint predates data-parallel training).</summary>
    public static int WorldSize(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        if (!meta.TryGetValue(key, out var v)) return 1;
        return int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n) && n > 0
            ? n : throw new SvgdException($"{path}: metadata '{key}' is '{v}', not a number of processes");
    }

    /// <summary>An optional JSON array of values in the metadata (class names, a shape); null when absent.</summary>
    public static List<T>? List<T>(IReadOnlyDictionary<string, string> meta, string key, string path)
    {
        if (!meta.TryGetValue(key, out var v)) return null;
        try
        {
            return System.Text.Json.Nodes.JsonNode.Parse(v)?.AsArray().Select(x => x!.GetValue<T>()).ToList()
                   ?? throw new SvgdException($"{path}: metadata '{key}' is null, not a list");
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new SvgdException($"{path}: metadata '{key}' is not a JSON list of {typeof(T).Name} values");
        }
    }

    /// <summary>
    /// Adds an Adam or AdamW optimiser's state to a checkpoint being written, tensor by tensor, so that state of any
    /// size streams to the file (an SVG-XL AdamW state is about 5.4 GB): for the i-th parameter of the optimiser
    /// (group by group, in order) <c>{key}.{i}.step</c> (an int64 scalar), <c>{key}.{i}.exp_avg</c>,
    /// <c>{key}.{i}.exp_avg_sq</c> and, with amsgrad, <c>{key}.{i}.max_exp_avg_sq</c>: the optimiser's own tensors,
    /// not copies. The optimiser's type and each parameter group's hyper-parameters and size go to metadata
    /// <c>{key}</c> as JSON. <see cref="RestoreOptimizer(OptimizerHelper, SafeTensors.Reader, string)"/> reads both back.
    /// </summary>
    public static void AddOptimizer(IDictionary<string, Tensor> tensors, IDictionary<string, string> metadata, string key, OptimizerHelper optimizer)
    {
        var sd = optimizer.state_dict();
        var groups = new JsonArray();
        for (int g = 0; g < sd.Options.Count; g++)
        {
            var h = Hyper.Of(sd.Options[g], key);
            groups.Add(new JsonObject
            {
                ["params"] = sd.StateIndexRef[g].Count,
                ["lr"] = h.LearningRate,
                ["initial_lr"] = h.InitialLearningRate,
                ["beta1"] = h.Beta1,
                ["beta2"] = h.Beta2,
                ["eps"] = h.Eps,
                ["weight_decay"] = h.WeightDecay,
                ["amsgrad"] = h.Amsgrad,
                ["maximize"] = h.Maximize,
            });
        }
        for (int i = 0; i < sd.State.Count; i++)
        {
            var m = Moments.Of(sd.State[i], key);
            tensors[$"{key}.{i}.{StepName}"] = torch.tensor(m.Step);
            tensors[$"{key}.{i}.{ExpAvgName}"] = m.ExpAvg;
            tensors[$"{key}.{i}.{ExpAvgSqName}"] = m.ExpAvgSq;
            if (m.MaxExpAvgSq is Tensor max) tensors[$"{key}.{i}.{MaxExpAvgSqName}"] = max;
        }
        metadata[key] = new JsonObject
        {
            ["optimizer"] = optimizer.GetType().Name,
            ["states"] = sd.State.Count,
            ["groups"] = groups,
        }.ToJsonString();
    }

    const string StepName = "step", ExpAvgName = "exp_avg", ExpAvgSqName = "exp_avg_sq", MaxExpAvgSqName = "max_exp_avg_sq";

    /// <summary>
    /// Restores an optimiser saved by <see cref="AddOptimizer"/>, reading each state tensor straight into the
    /// optimiser's own (no second copy of the state in memory), or from the single byte tensor <paramref name="key"/>
    /// that checkpoints written before held (TorchSharp's <c>save_state_dict</c> stream). Everything is checked
    /// against the optimiser before anything changes: a mismatch is one line naming the file and the key.
    /// </summary>
    public static void RestoreOptimizer(OptimizerHelper optimizer, SafeTensors.Reader file, string key)
    {
        string path = file.Header.Path;
        if (file.Contains(key))
        {
            using var blob = file.Read(key);
            RestoreOptimizer(optimizer, blob, path, key);
            return;
        }
        if (!file.Header.Metadata.TryGetValue(key, out var json))
            throw new SvgdException($"{path}: training checkpoint lacks the optimizer state '{key}'");
        SvgdException Unfit(string why) => new($"{path}: optimizer state '{key}' does not fit this run ({why})");

        var sd = optimizer.state_dict();
        var saved = SavedOptimizer.Parse(json, path, key);
        if (saved.Type != optimizer.GetType().Name) throw Unfit($"saved from {saved.Type}, this run uses {optimizer.GetType().Name}");
        if (saved.States != sd.State.Count) throw Unfit($"{saved.States} parameters saved, the optimizer has {sd.State.Count}");
        if (saved.Groups.Count != sd.Options.Count) throw Unfit($"{saved.Groups.Count} parameter groups saved, the optimizer has {sd.Options.Count}");
        for (int g = 0; g < saved.Groups.Count; g++)
            if (saved.Groups[g].Params != sd.StateIndexRef[g].Count)
                throw Unfit($"parameter group {g} has {saved.Groups[g].Params} parameters saved, {sd.StateIndexRef[g].Count} in the optimizer");

        var current = sd.State.Select(s => Moments.Of(s, key)).ToList();
        var steps = new long[current.Count];
        for (int i = 0; i < current.Count; i++)
        {
            string Name(string part) => $"{key}.{i}.{part}";
            foreach (var part in new[] { StepName, ExpAvgName, ExpAvgSqName })
                if (!file.Contains(Name(part))) throw Unfit($"no tensor '{Name(part)}'");
            var step = file.Info(Name(StepName));
            if (step.Dtype != ScalarType.Int64 || step.Shape.Length != 0)
                throw Unfit($"'{Name(StepName)}' is {Checkpoint.Shape(step.Shape)} {step.DtypeName}, not an int64 scalar");
            foreach (var part in new[] { ExpAvgName, ExpAvgSqName, MaxExpAvgSqName })
            {
                if (!file.Contains(Name(part))) continue;
                var info = file.Info(Name(part));
                if (!info.Shape.SequenceEqual(current[i].ExpAvg.shape) || info.Dtype != current[i].ExpAvg.dtype)
                    throw Unfit($"'{Name(part)}' is {Checkpoint.Shape(info.Shape)} {info.DtypeName}, parameter {i} is {Checkpoint.Shape(current[i].ExpAvg.shape)} {current[i].ExpAvg.dtype}");
            }
            using var t = file.Read(Name(StepName));
            steps[i] = t.item<long>();
            if (steps[i] < 0) throw Unfit($"'{Name(StepName)}' is {steps[i]}");
        }

        for (int g = 0; g < saved.Groups.Count; g++) saved.Groups[g].Hyper.ApplyTo(sd.Options[g]);
        using var _ = torch.no_grad();
        for (int i = 0; i < current.Count; i++)
        {
            string Name(string part) => $"{key}.{i}.{part}";
            var m = current[i];
            file.ReadInto(Name(ExpAvgName), m.ExpAvg, $"the state of parameter {i}");
            file.ReadInto(Name(ExpAvgSqName), m.ExpAvgSq, $"the state of parameter {i}");
            Tensor? max = m.MaxExpAvgSq;
            if (file.Contains(Name(MaxExpAvgSqName)))
            {
                max ??= torch.zeros_like(m.ExpAvgSq).DetachFromDisposeScope();
                file.ReadInto(Name(MaxExpAvgSqName), max, $"the state of parameter {i}");
            }
            else
            {
                max?.Dispose();
                max = null;
            }
            Moments.Set(sd.State[i], steps[i], max);
        }
    }

    /// <summary>The checkpoint layout before <see cref="AddOptimizer"/>: TorchSharp's <c>save_state_dict</c> stream in one
    /// byte tensor (so at most 2 GB of state). Only tests write it now, to check that such checkpoints still resume.</summary>
    public static Tensor OptimizerBlob(OptimizerHelper optimizer)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, System.Text.Encoding.UTF8, leaveOpen: true)) optimizer.save_state_dict(w);
        var bytes = ms.ToArray();
        var t = torch.empty(bytes.LongLength, dtype: ScalarType.Byte);
        bytes.CopyTo(t.bytes);
        return t;
    }

    /// <summary>Restores an optimiser from a byte tensor of <see cref="OptimizerBlob"/>'s layout.</summary>
    public static void RestoreOptimizer(OptimizerHelper optimizer, Tensor blob, string source, string key)
    {
        try
        {
            using var ms = new MemoryStream(blob.bytes.ToArray());
            using var r = new BinaryReader(ms);
            optimizer.load_state_dict(r);
        }
        catch (Exception e) when (e is not SvgdException)
        {
            throw new SvgdException($"{source}: optimizer state '{key}' does not fit this run ({e.Message})");
        }
    }

    /// <summary>The per-parameter state of Adam and AdamW (the two optimisers training uses).</summary>
    sealed record Moments(long Step, Tensor ExpAvg, Tensor ExpAvgSq, Tensor? MaxExpAvgSq)
    {
        public static Moments Of(OptimizerState state, string key) => state switch
        {
            Adam.State a => new(a.step, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq),
            AdamW.State w => new(w.step, w.exp_avg, w.exp_avg_sq, w.max_exp_avg_sq),
            _ => throw new NotSupportedException($"optimizer state '{key}': cannot save a {state.GetType().FullName}"),
        };

        public static void Set(OptimizerState state, long step, Tensor? max)
        {
            switch (state)
            {
                case Adam.State a: a.step = step; a.max_exp_avg_sq = max; break;
                case AdamW.State w: w.step = step; w.max_exp_avg_sq = max; break;
            }
        }
    }

    /// <summary>A parameter group's hyper-parameters, as TorchSharp's <c>save_state_dict</c> writes them.</summary>
    sealed record Hyper(double LearningRate, double InitialLearningRate, double Beta1, double Beta2, double Eps, double WeightDecay, bool Amsgrad, bool Maximize)
    {
        public static Hyper Of(OptimizerOptions o, string key) => o switch
        {
            Adam.Options a => new(a.LearningRate!.Value, a.InitialLearningRate, a.beta1!.Value, a.beta2!.Value, a.eps!.Value, a.weight_decay!.Value, a.amsgrad!.Value, a.maximize!.Value),
            AdamW.Options w => new(w.LearningRate!.Value, w.InitialLearningRate, w.beta1!.Value, w.beta2!.Value, w.eps!.Value, w.weight_decay!.Value, w.amsgrad!.Value, w.maximize!.Value),
            _ => throw new NotSupportedException($"optimizer state '{key}': cannot save the options of a {o.GetType().FullName}"),
        };

        public void ApplyTo(OptimizerOptions o)
        {
            o.LearningRate = LearningRate;
            o.InitialLearningRate = InitialLearningRate;
            switch (o)
            {
                case Adam.Options a: (a.beta1, a.beta2, a.eps, a.weight_decay, a.amsgrad, a.maximize) = (Beta1, Beta2, Eps, WeightDecay, Amsgrad, Maximize); break;
                case AdamW.Options w: (w.beta1, w.beta2, w.eps, w.weight_decay, w.amsgrad, w.maximize) = (Beta1, Beta2, Eps, WeightDecay, Amsgrad, Maximize); break;
            }
        }
    }

    /// <summary>The metadata <see cref="AddOptimizer"/> writes, parsed; a damaged one is one line naming the file and key.</summary>
    sealed record SavedOptimizer(string Type, int States, List<(int Params, Hyper Hyper)> Groups)
    {
        public static SavedOptimizer Parse(string json, string path, string key)
        {
            try
            {
                var o = JsonNode.Parse(json)!.AsObject();
                var groups = o["groups"]!.AsArray().Select(n =>
                {
                    var g = n!.AsObject();
                    double D(string k) => g[k]!.GetValue<double>();
                    bool B(string k) => g[k]!.GetValue<bool>();
                    return (g["params"]!.GetValue<int>(), new Hyper(D("lr"), D("initial_lr"), D("beta1"), D("beta2"), D("eps"), D("weight_decay"), B("amsgrad"), B("maximize")));
                }).ToList();
                return new SavedOptimizer(o["optimizer"]!.GetValue<string>(), o["states"]!.GetValue<int>(), groups);
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException or NullReferenceException)
            {
                throw new SvgdException($"{path}: metadata '{key}' is not an optimizer description ({e.Message.Split('\n')[0].Trim()})");
            }
        }
    }

    public static Dictionary<string, Tensor> Prefixed(string prefix, IEnumerable<KeyValuePair<string, Tensor>> sd) =>
        sd.ToDictionary(kv => prefix + kv.Key, kv => kv.Value);

    public static Dictionary<string, Tensor> Section(IReadOnlyDictionary<string, Tensor> sd, string prefix) =>
        sd.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value);

    /// <summary>A generator whose draws are a function of (seed, step, stream) alone, so a resumed run
    /// draws exactly what an uninterrupted one would.</summary>
    public static Generator StepGenerator(long seed, long step, int stream)
    {
        unchecked
        {
            long s = seed * 1_000_003L + step * 7919L + stream * 104_729L + 12345L;
            return new Generator((ulong)(s & long.MaxValue));
        }
    }
}
