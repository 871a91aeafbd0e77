using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Checkpoints;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class InspectCommand
{
    public static Command Create(CliContext cli)
    {
        var file = new Argument<string>("file") { Description = "Checkpoint: .safetensors, or a PyTorch zip pickle (.pth, .pt, .ckpt)." }.InputPath();
        var section = new Option<string?>("--section") { Description = "List only this sub-dictionary (e.g. ema, state_dict)." };
        var max = new Option<int>("--max") { Description = "Most tensors to list per section (0: all).", DefaultValueFactory = _ => 0 };
        var cmd = new Command("inspect", "Show a checkpoint's containers, tensor names, shapes, dtypes and parameter counts.") { file, section, max };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            using var scope = torch.NewDisposeScope();
            string path = p.GetValue(file)!;
            var ckpt = Checkpoint.Open(path);
            console.MarkupLine($"[bold]{Markup.Escape(path)}[/]: {ckpt.FormatName}");
            foreach (var (k, v) in ckpt.Metadata)
                console.MarkupLine($"  metadata [blue]{Markup.Escape(k)}[/] = {Markup.Escape(v.Length > 160 ? v[..160] + "..." : v)}");
            var sections = ckpt.Sections();
            string? only = p.GetValue(section);
            bool nested = sections.Any(s => !s.Description.StartsWith("tensor", StringComparison.Ordinal));
            var names = only != null ? new[] { only } : nested ? sections.Where(s => s.Description.StartsWith("dict", StringComparison.Ordinal)).Select(s => s.Name).ToArray() : new string?[] { null };
            if (nested && only == null)
            {
                console.MarkupLine("  containers:");
                foreach (var (name, desc) in sections) console.MarkupLine($"    [blue]{Markup.Escape(name)}[/]: {Markup.Escape(desc)}");
            }
            long total = 0;
            foreach (var name in names)
            {
                var sd = ckpt.StateDict(name);
                var table = new Table().Border(TableBorder.Simple).Title(name == null ? "tensors" : $"section {name}");
                table.AddColumn("name").AddColumn("shape").AddColumn("dtype").AddColumn(new TableColumn("numel").RightAligned());
                long count = 0;
                int shown = 0, limit = p.GetValue(max);
                foreach (var (k, t) in sd)
                {
                    count += t.numel();
                    if (limit > 0 && shown++ >= limit) continue;
                    table.AddRow(Markup.Escape(k), Markup.Escape(Checkpoint.Shape(t.shape)), t.dtype.ToString(), t.numel().ToString("N0"));
                }
                console.Write(table);
                console.MarkupLine($"  {sd.Count} tensors, [bold]{count:N0}[/] parameters{(name == null ? "" : $" in {Markup.Escape(name)}")}");
                total += count;
            }
            if (names.Length > 1) console.MarkupLine($"  total: {total:N0} parameters");
            return 0;
        }));
        return cmd;
    }
}
