using System.CommandLine;
using System.Globalization;
using System.Runtime.CompilerServices;
using SvgDiffusion.Sampling;

namespace SvgDiffusion.Cli;

/// <summary>
/// Every option is checked here before a command does any work, by one rule per option name, so the same
/// option means the same thing in every command (a --batch-size of 0 is refused everywhere, an output
/// folder that cannot be written is found before the sampling, not after). Order: counts and rates, then
/// inputs (must exist), then outputs (created and probed with a write), so a typo costs no side effects
/// beyond the output folders of an otherwise valid call.
/// </summary>
internal static class OptionRules
{
    static readonly HashSet<string> PositiveCounts =
        ["--batch-size", "--extract-batch-size", "--n", "--shard-size", "--grid-max", "--steps", "--sample-steps", "--epochs", "--repeats", "--feature-size", "--frames", "--queue", "--max-n", "--max-steps", "--max-frames", "--max-upload-mb", "--eval-size"];

    /// <summary>0 means off / all / never for these.</summary>
    static readonly HashSet<string> NonNegativeCounts = ["--checkpoint-every", "--sample-every", "--disc-start", "--warmup-epochs", "--max", "--limit", "--eval-every"];

    /// <summary>Real-valued options: finite (NaN passes no comparison, so it is named explicitly) and in range.</summary>
    static readonly Dictionary<string, (double Min, bool MinOpen, double Max, string Range)> Reals = new()
    {
        ["--lr"] = (0, true, double.MaxValue, "> 0"),
        ["--ema"] = (0, false, 1, "in [0, 1]"),
        ["--grad-clip"] = (0, false, double.MaxValue, ">= 0 (0: off)"),
        // Sampling's ranges are the library's (GenerationRequest), so the CLI and the studio refuse the same values in the same words.
        ["--shift"] = (GenerationRequest.MinShift, false, GenerationRequest.MaxShift, "in " + GenerationRequest.Range(GenerationRequest.MinShift, GenerationRequest.MaxShift)),
        ["--cfg"] = (0, false, GenerationRequest.MaxCfg, "in " + GenerationRequest.Range(0, GenerationRequest.MaxCfg)),
        ["--sample-cfg"] = (0, false, GenerationRequest.MaxCfg, "in " + GenerationRequest.Range(0, GenerationRequest.MaxCfg)),
        ["--disc-weight"] = (0, false, double.MaxValue, ">= 0"),
        ["--weight-decay"] = (0, false, double.MaxValue, ">= 0"),
        ["--fp16-tolerance"] = (0, false, double.MaxValue, ">= 0"),
        ["--strength"] = (GenerationRequest.MinStrength, false, 1, "in " + GenerationRequest.Range(GenerationRequest.MinStrength, 1)),
    };

    /// <summary>Options that name an existing file wherever they appear.</summary>
    static readonly HashSet<string> InputFiles =
    [
        "--autoencoder", "--model", "--stats", "--resume", "--init", "--encoder", "--lpips", "--vgg", "--config", "--autoencoder-config",
        "--dit-config", "--encoder-config", "--init-noise", "--tensor", "--dit", "--feature-encoder", "--inception",
        "--semantic", "--detail",
    ];

    /// <summary>Options that name an existing file or folder (image sets, caches, statistics or folders).</summary>
    static readonly HashSet<string> InputPaths = ["--images", "--latents", "--ref", "--train", "--val", "--eval-latents", "--eval-images"];

    internal enum Kind { InputPath, OutputFile, OutputDir }

    static readonly Dictionary<string, Kind> OutputsByName = new()
    {
        ["--latent-out"] = Kind.OutputFile, ["--save-stats-first"] = Kind.OutputFile, ["--save-stats-second"] = Kind.OutputFile,
        ["--json"] = Kind.OutputFile, ["--out-dir"] = Kind.OutputDir,
    };

    /// <summary>What --out (and the positional arguments) mean differs per command: declared where the option is made.</summary>
    static readonly ConditionalWeakTable<Symbol, Func<string, Kind>> Declared = new();

    public static T OutputFile<T>(this T symbol) where T : Symbol => Declare(symbol, _ => Kind.OutputFile);
    public static T OutputDir<T>(this T symbol) where T : Symbol => Declare(symbol, _ => Kind.OutputDir);
    public static T InputPath<T>(this T symbol) where T : Symbol => Declare(symbol, _ => Kind.InputPath);

    /// <summary>An output whose kind depends on its value (e.g. a .safetensors file, else a folder).</summary>
    public static T Output<T>(this T symbol, Func<string, Kind> kind) where T : Symbol => Declare(symbol, kind);

    /// <summary>Count options of one command where 0 asks for an automatic value (e.g. sample's --batch-size).</summary>
    static readonly ConditionalWeakTable<Symbol, object> ZeroIsAutomatic = new();

    public static Option<int> ZeroMeansAutomatic(this Option<int> option)
    {
        ZeroIsAutomatic.AddOrUpdate(option, true);
        return option;
    }

    static T Declare<T>(T symbol, Func<string, Kind> kind) where T : Symbol
    {
        Declared.AddOrUpdate(symbol, kind);
        return symbol;
    }

    /// <summary>Checks the options of the command being run; the first problem is thrown as one line.</summary>
    public static void Check(ParseResult p)
    {
        var command = p.CommandResult.Command;
        foreach (var o in command.Options)
        {
            if (p.GetResult(o) == null) continue;
            switch (o)
            {
                case Option<int> i when ZeroIsAutomatic.TryGetValue(o, out _) && p.GetValue(i) < 0:
                    throw new SvgdException($"{o.Name} must be a positive whole number (or 0: automatic), got {p.GetValue(i)}");
                case Option<int> i when PositiveCounts.Contains(o.Name) && !ZeroIsAutomatic.TryGetValue(o, out _) && p.GetValue(i) <= 0:
                    throw new SvgdException($"{o.Name} must be a positive whole number, got {p.GetValue(i)}");
                case Option<int> i when NonNegativeCounts.Contains(o.Name) && p.GetValue(i) < 0:
                    throw new SvgdException($"{o.Name} must be 0 or more, got {p.GetValue(i)}");
                case Option<double> d when Reals.TryGetValue(o.Name, out var r):
                    // The parser reads "1,5" as 15 (a thousands separator): a comma meant as a decimal mark must not pass silently.
                    if (p.GetResult(o)?.Tokens.FirstOrDefault()?.Value is string token && token.Contains(','))
                        throw new SvgdException($"{o.Name} '{token}': write numbers with a decimal point (1.5), not a comma");
                    double v = p.GetValue(d);
                    bool ok = double.IsFinite(v) && (r.MinOpen ? v > r.Min : v >= r.Min) && v <= r.Max;
                    if (!ok) throw new SvgdException($"{o.Name} must be a finite number {r.Range}, got {v.ToString(CultureInfo.InvariantCulture)}");
                    break;
                case Option<string> s when o.Name == "--precision":
                    Commands.PrecisionOption.Parse(p, s);
                    break;
            }
        }

        var paths = new List<(string Name, string Value, Kind Kind)>();
        foreach (var s in command.Options.Cast<Symbol>().Concat(command.Arguments))
        {
            string? value = s switch
            {
                Option<string> o when p.GetResult(o) != null => p.GetValue(o),
                Option<string?> o when p.GetResult(o) != null => p.GetValue(o),
                Argument<string> a when p.GetResult(a) != null => p.GetValue(a),
                _ => null,
            };
            if (value == null) continue;
            Kind? kind = Declared.TryGetValue(s, out var f) ? f(value)
                : OutputsByName.TryGetValue(s.Name, out var k) ? k
                : InputFiles.Contains(s.Name) || InputPaths.Contains(s.Name) ? Kind.InputPath : null;
            if (kind is Kind kk) paths.Add((s is Argument ? $"<{s.Name}>" : s.Name, value, kk));
        }
        foreach (var (name, value, kind) in paths.Where(x => x.Kind == Kind.InputPath))
        {
            if (InputFiles.Contains(name) ? File.Exists(value) : File.Exists(value) || Directory.Exists(value)) continue;
            // A model may also be named: a folder written by export, or a bundled model (ModelFolder.Resolve checks it).
            if (name is "--model" or "--autoencoder")
            {
                if (Directory.Exists(value) || Sampling.ModelFolder.BundledNames.Contains(value)) continue;
                throw new SvgdException($"{name} {value}: no such file, folder or bundled model (bundled: {string.Join(", ", Sampling.ModelFolder.BundledNames)})");
            }
            throw new SvgdException(Directory.Exists(value) ? $"{name} {value}: is a folder, expected a file" : $"{name} {value}: no such file or folder");
        }
        foreach (var (name, value, kind) in paths.Where(x => x.Kind != Kind.InputPath))
            EnsureWritable(name, value, kind == Kind.OutputDir);
    }

    /// <summary>
    /// Creates the folder that will receive <paramref name="path"/> and writes and deletes a probe file in it:
    /// a parent that is a regular file, a missing permission or a read-only file system all surface here.
    /// </summary>
    internal static void EnsureWritable(string name, string path, bool isFolder)
    {
        // Regular files only: a device node, FIFO or socket is refused, a symbolic link names its final target.
        if (isFolder) Checkpoints.OutputTarget.CheckFolder(path, name);
        string full = isFolder ? Path.GetFullPath(path) : Checkpoints.OutputTarget.Resolve(path, name);
        string dir = isFolder ? full : Path.GetDirectoryName(full)!;
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SvgdException($"{name} {path}: cannot create the folder {dir} ({FirstLine(e)})");
        }
        string probe = Path.Combine(dir, $".svgd-write-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            File.WriteAllBytes(probe, [0]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SvgdException($"{name} {path}: cannot write in {dir} ({FirstLine(e)})");
        }
        finally
        {
            try { File.Delete(probe); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    static string FirstLine(Exception e) => e.Message.Split('\n')[0].TrimEnd('.');
}
