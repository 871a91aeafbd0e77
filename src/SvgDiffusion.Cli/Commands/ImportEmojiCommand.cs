using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data.Emoji;

namespace SvgDiffusion.Cli.Commands;

internal static class ImportEmojiCommand
{
    public static Command Create(CliContext cli)
    {
        var packages = new Option<string[]>("--package") { Description = "emoji-datasource-google / -twitter npm tarballs (npm pack emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0), read as they are. Apple's and Facebook's sets are not openly licensed and are refused.", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder to create: train/<class>/ (and test/<class>/), masks/, captions.jsonl, LICENSES.md, attribution.json.", Required = true }.OutputDir();
        var by = new Option<string>("--by") { Description = "Class folders by category (9 classes) or subcategory (about 99).", DefaultValueFactory = _ => "category" };
        var background = new Option<string>("--background") { Description = "Colour under transparent pixels: white, black, #rrggbb or r,g,b.", DefaultValueFactory = _ => "white" };
        var testVendor = new Option<string?>("--test-vendor") { Description = "Put this vendor's images in test/ (the rest in train/): a held-out artist for evaluation, e.g. twitter." };
        var components = new Option<bool>("--include-components") { Description = "Also import emoji.json's 'Component' category (skin-tone swatches, hair styles)." };
        var segmentation = new Option<bool>("--segmentation") { Description = "Also write segmentation/<split>/images and labels (foreground 1 where alpha >= 128, background 0): the layout 'svgd probe segment' reads." };
        var cmd = new Command("import-emoji", "Turn emoji-datasource npm tarballs (64x64 RGBA Noto / Twemoji images) into class folders, alpha masks and captions, with their licences.")
        { packages, output, by, background, testVendor, components, segmentation };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var options = new EmojiImportOptions
            {
                By = p.GetValue(by)!.Trim().ToLowerInvariant(),
                Background = EmojiImportOptions.ParseColour(p.GetValue(background)!),
                Segmentation = p.GetValue(segmentation),
                TestVendor = p.GetValue(testVendor)?.Trim().ToLowerInvariant(),
                IncludeComponents = p.GetValue(components),
            }.Validate();
            var files = p.GetValue(packages) ?? Array.Empty<string>();
            foreach (var f in files)
                if (!File.Exists(f)) throw new SvgdException($"--package {f}: no such file");
            var read = files.Select(EmojiPackage.Read).ToList();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            EmojiImportResult result = null!;
            ProgressBars.Run(cli.Console, "import-emoji", read.Sum(r => r.Records.Count), step =>
            {
                int last = 0;
                result = EmojiImport.Run(read, p.GetValue(output)!, options, (done, _) => { step(done - last); last = done; });
            });
            var vendors = string.Join(", ", result.PerVendor.Select(kv => $"{kv.Key} {kv.Value}"));
            cli.Console.MarkupLine($"wrote {result.Train} training and {result.Test} test images ({Markup.Escape(vendors)}) in {result.Classes.Count} classes under [bold]{Markup.Escape(result.Directory)}[/] in {clock.Elapsed.TotalSeconds:F1} s; licences in {EmojiImport.LicensesFile}");
            return 0;
        }));
        return cmd;
    }
}
