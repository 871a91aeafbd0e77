using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class ImportIdxCommand
{
    public static readonly string[] FashionMnistClasses = { "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot" };

    public static Command Create(CliContext cli)
    {
        var images = new Option<string>("--images") { Description = "IDX image file (e.g. /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz).", Required = true };
        var labels = new Option<string>("--labels") { Description = "IDX label file of the same images.", Required = true };
        var output = new Option<string>("--out") { Description = "Image folder to write: <out>/<class>/<index>.png.", Required = true }.OutputDir();
        var names = new Option<string?>("--class-names") { Description = "Comma-separated folder names for labels 0, 1, ... (default: Fashion-MNIST's names when there are 10 classes, else the numbers)." };
        var limit = new Option<int>("--limit") { Description = "Import only the first N images (0: all).", DefaultValueFactory = _ => 0 };
        var cmd = new Command("import-idx", "Turn an MNIST/Fashion-MNIST IDX pair into an image folder with one sub-folder per class.") { images, labels, output, names, limit };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            using var x = IdxFile.Read(p.GetValue(images)!);
            using var y = IdxFile.Read(p.GetValue(labels)!);
            if (x.dim() != 3 || y.dim() != 1 || x.shape[0] != y.shape[0])
                throw new SvgdException($"{p.GetValue(images)} [{string.Join(", ", x.shape)}] and {p.GetValue(labels)} [{string.Join(", ", y.shape)}] are not matching images [N,H,W] and labels [N]");
            var lab = y.data<byte>().ToArray();
            int classes = lab.Max() + 1;
            var folderNames = p.GetValue(names) is string s ? s.Split(',', StringSplitOptions.TrimEntries)
                : classes == 10 ? FashionMnistClasses : Enumerable.Range(0, classes).Select(i => i.ToString()).ToArray();
            if (folderNames.Length < classes) throw new SvgdException($"--class-names gives {folderNames.Length} names for {classes} classes");
            int n = p.GetValue(limit) is > 0 and var l ? Math.Min(l, lab.Length) : lab.Length;
            string outDir = p.GetValue(output)!;
            int written = 0;
            ProgressBars.Run(cli.Console, "import-idx", n, step =>
            {
                for (int i = 0; i < n; i++)
                {
                    string file = Path.Combine(outDir, folderNames[lab[i]], $"{i:D6}.png");
                    if (!File.Exists(file))
                    {
                        using var img = x[i];
                        ImageFiles.SavePng(img, file);
                        written++;
                    }
                    if (i % 500 == 0) step(Math.Min(500, n - i));
                }
            });
            cli.Console.MarkupLine($"wrote {written} images ({n - written} already there) under [bold]{Markup.Escape(outDir)}[/], {classes} classes");
            return 0;
        }));
        return cmd;
    }
}
