// Generate a grid of samples with a pretrained SVG model, then recolour one of them with another's colours.
// Usage: dotnet run --project examples/GenerateAndRecolor -- [model] [out-folder] [steps]
//   model: a bundled model's name (fashion-mnist, ...) or a folder written by 'svgd export'.
using SvgDiffusion;
using SvgDiffusion.Pipelines;

string model = args.Length > 0 ? args[0] : "fashion-mnist";
string outDir = args.Length > 1 ? args[1] : ".";
int steps = args.Length > 2 ? int.Parse(args[2]) : 25;
try
{
    using var pipe = SvgPipeline.FromPretrained(model);
    Console.WriteLine($"{pipe.Name}: {pipe.ImageSize}x{pipe.ImageSize}, classes {string.Join(", ", pipe.ClassNames)}");

    // Two samples of each of the first three classes, one row per class.
    using var samples = pipe.Generate(classes: pipe.ClassNames.Take(3), perClass: 2, steps: steps, seed: 1);
    Console.WriteLine($"wrote {samples.Save(Path.Combine(outDir, "samples.png"))}");
    var each = samples.SaveEach(Path.Combine(outDir, "samples"));

    // The first sample's shape with the last sample's colours.
    using var edit = pipe.Recolor(each[0], likePath: each[^1], steps: steps, seed: 1);
    Console.WriteLine($"wrote {edit.Save(Path.Combine(outDir, "edit.png"))}");
    return 0;
}
catch (SvgdException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}
