using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Evaluation;

namespace SvgDiffusion.Cli.Commands;

internal static class FidCommand
{
    public static Command Create(CliContext cli)
    {
        var first = new Argument<string>("first") { Description = "An image folder, or a .npz with mu and sigma (pytorch-fid stats, ADM reference batches)." }.InputPath();
        var second = new Argument<string>("second") { Description = "Another image folder or .npz." }.InputPath();
        var features = new FeatureNetworkOptions();
        var batch = new Option<int>("--batch-size") { Description = "Images per forward pass.", DefaultValueFactory = _ => 32 };
        var save1 = new Option<string?>("--save-stats-first") { Description = "Write the first input's statistics to this .npz (for reuse)." };
        var save2 = new Option<string?>("--save-stats-second") { Description = "Write the second input's statistics to this .npz." };
        var cmd = new Command("fid", "Fréchet distance between two image sets or statistics files (FID with pytorch-fid's Inception, else FD-<network>).") { first, second, batch, save1, save2 };
        foreach (var o in features.All) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            string a = p.GetValue(first)!, b = p.GetValue(second)!;
            bool needNet = !IsNpz(a) || !IsNpz(b);
            using var net = needNet ? features.Create(p) : null;
            using var sa = Stats(cli, net, a, p.GetValue(batch), p.GetValue(save1));
            using var sb = Stats(cli, net, b, p.GetValue(batch), p.GetValue(save2));
            if (sa.Dim != sb.Dim) throw new SvgdException($"{a} has {sa.Dim}-d features but {b} has {sb.Dim}-d: they come from different networks");
            double d = FrechetDistance.Compute(sa, sb, warn: cli.Warn);
            if (Math.Abs(d) < 1e-9) d = 0;   // identical statistics: no "-0.0000"
            string label = net?.Label ?? (sa.Dim == FidInceptionV3.FeatureDim ? "FID" : $"FD ({sa.Dim}-d features)");
            cli.Console.MarkupLine($"[bold]{label}[/]: {d:F4}");
            return 0;
        }));
        return cmd;
    }

    static bool IsNpz(string path) => path.EndsWith(".npz", StringComparison.OrdinalIgnoreCase) && File.Exists(path);

    static FidStatistics Stats(CliContext cli, IFeatureNetwork? net, string input, int batchSize, string? save)
    {
        var stats = IsNpz(input) ? FidStatistics.Load(input) : FolderStats(cli, net, input, batchSize);
        // Also for an .npz input: the option promises a file, and a silent no-op looks like a success.
        if (save != null)
        {
            stats.Save(save);
            cli.Console.MarkupLine($"wrote [bold]{Markup.Escape(save)}[/]");
        }
        return stats;
    }

    static FidStatistics FolderStats(CliContext cli, IFeatureNetwork? net, string input, int batchSize)
    {
        int count = ImageFiles.List(input).Count;
        FeatureMoments? moments = null;
        ProgressBars.Run(cli.Console, $"features of {Path.GetFileName(Path.TrimEndingDirectorySeparator(input))}", count,
            step => moments = FeatureNetworkOptions.FolderMoments(net!, input, batchSize, step));
        using var m = moments!;
        return m.ToStatistics(cli.Warn, input);
    }
}
