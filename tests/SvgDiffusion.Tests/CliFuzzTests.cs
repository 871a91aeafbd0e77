using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using SvgDiffusion.Checkpoints;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// Hostile command lines, generated the way the probe that found them was: every output option pointed at device
/// nodes, FIFOs, sockets, folders, empty names and links; every latent input empty, integer or misshapen; damaged
/// cache indexes; empty list items; counts past every ceiling; and seeded random values for every numeric option.
/// Each must end in exit 1 with one "error:" line and nothing written (or run, where the value is valid), never in
/// exit 2 (an internal error), and the special files must still be what they were.
/// </summary>
public class CliFuzzTests(ITestOutputHelper output)
{
    const int Seed = 20261207;

    enum Expect { Refused, Accepted, Either }

    sealed record Case(string Name, string[] Args, Expect Expect, string? Contains = null, string? MustNotExist = null);

    static string Ae => Path.Combine(Reference.RepoRoot, "models", "fashion-mnist", "autoencoder.safetensors");
    static string Image => Data.ImageFiles.List(AutoencoderTrainingTests.FashionMnist)[0];

    /// <summary>Files the cases point at, made once in a fresh folder.</summary>
    sealed class Fixture
    {
        public string Dir { get; } = Reference.TempDir();
        public string CharDevice { get; }
        public string Fifo { get; }
        public string SocketPath { get; }
        public string Folder { get; }
        public string FileAsParent { get; }
        public readonly Socket Listener;
        int _n;

        public Fixture()
        {
            // A device node of our own where we may make one (root, as in CI): a regression must not damage /dev/null.
            CharDevice = Path.Combine(Dir, "null-device");
            if (!(Environment.UserName == "root" && RunTool("mknod", CharDevice, "c", "1", "3") == 0)) CharDevice = "/dev/full";
            Fifo = Path.Combine(Dir, "fifo");
            Assert.Equal(0, RunTool("mkfifo", Fifo));
            SocketPath = Path.Combine(Dir, "socket");
            Listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            Listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
            Folder = Directory.CreateDirectory(Path.Combine(Dir, "a-folder")).FullName;
            FileAsParent = Path.Combine(Dir, "a-file");
            File.WriteAllText(FileAsParent, "not a folder");
        }

        /// <summary>A fresh path under the fixture's folder that nothing has written yet.</summary>
        public string Fresh(string ext) => Path.Combine(Dir, $"out-{_n++:D4}{ext}");

        public string Tensor(string name, string dtype, long[] shape, int elementSize)
        {
            long numel = shape.Aggregate(1L, (a, b) => a * b);
            string header = $"{{\"latent\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[0,{numel * elementSize}]}}}}";
            while ((header.Length + 8) % 8 != 0) header += " ";
            string path = Path.Combine(Dir, name + ".safetensors");
            using var fs = File.Create(path);
            fs.Write(BitConverter.GetBytes((ulong)header.Length));
            fs.Write(Encoding.ASCII.GetBytes(header));
            fs.Write(new byte[numel * elementSize]);
            return path;
        }

        public string Cache(string name, string indexJson)
        {
            string d = Directory.CreateDirectory(Path.Combine(Dir, "cache-" + name)).FullName;
            File.WriteAllText(Path.Combine(d, "index.json"), indexJson);
            return d;
        }
    }

    static int RunTool(string tool, params string[] args)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            p.WaitForExit();
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception) { return -1; }
    }

    /// <summary>Commands that write one file, with the rest of a valid call around it.</summary>
    static IEnumerable<(string Name, Func<string, string[]> Call, string Ext)> FileWriters(Fixture f) => new (string, Func<string, string[]>, string)[]
    {
        ("sample", o => ["sample", "--n", "1", "--steps", "1", "--out", o], ".png"),
        ("sample-latent", o => ["sample", "--n", "1", "--steps", "1", "--no-decode", "--latent-out", o], ".safetensors"),
        ("interpolate", o => ["interpolate", "--seeds", "3,8", "--steps", "1", "--frames", "2", "--out", o], ".png"),
        ("vary", o => ["vary", Image, "--n", "1", "--steps", "1", "--out", o], ".png"),
        ("mix", o => ["mix", "--semantic", Image, "--detail", Image, "--out", o], ".png"),
        ("recolor", o => ["recolor", Image, "--like", Image, "--steps", "1", "--out", o], ".png"),
        ("encode", o => ["encode", "--autoencoder", Ae, "--images", Image, "--out", o], ".safetensors"),
        ("latent-stats", o => ["latent-stats", "--autoencoder", Ae, "--images", AutoencoderTrainingTests.FashionMnist, "--out", o], ".safetensors"),
        ("features", o => ["features", "--encoder", Reference.File_("dinov3_swiglu.pth"), "--images", Image, "--size", "32", "--out", o], ".safetensors"),
        ("fid-stats", o => ["fid", AutoencoderTrainingTests.FashionMnist, AutoencoderTrainingTests.FashionMnist, "--save-stats-first", o], ".npz"),
        ("bench-json", o => ["bench", "--json", o], ".json"),
    };

    static IEnumerable<Case> OutputCases(Fixture f)
    {
        foreach (var (name, call, ext) in FileWriters(f))
        {
            yield return new(name + "-chardev", call(f.CharDevice), Expect.Refused, "not a regular file");
            yield return new(name + "-devfull", call("/dev/full"), Expect.Refused, "is a character device");
            yield return new(name + "-fifo", call(f.Fifo), Expect.Refused, "FIFO");
            yield return new(name + "-socket", call(f.SocketPath), Expect.Refused, "socket");
            yield return new(name + "-empty", call(""), Expect.Refused, "the path is empty");
            yield return new(name + "-blank", call("   "), Expect.Refused, "the path is empty");
            yield return new(name + "-folder", call(f.Folder), Expect.Refused, "is a folder");
            string under = Path.Combine(f.FileAsParent, "x" + ext);
            yield return new(name + "-parent-is-file", call(under), Expect.Refused, "cannot", under);
            string link = Path.Combine(f.Dir, $"link-to-device-{name}{ext}");
            File.CreateSymbolicLink(link, f.CharDevice);
            yield return new(name + "-link-to-device", call(link), Expect.Refused, "through the link");
        }
        foreach (var (name, call) in new (string, Func<string, string[]>)[]
                 {
                     ("sample", o => ["sample", "--n", "1", "--steps", "1", "--out-dir", o]),
                     ("interpolate", o => ["interpolate", "--seeds", "3,8", "--steps", "1", "--out-dir", o]),
                     ("vary", o => ["vary", Image, "--n", "1", "--steps", "1", "--out-dir", o]),
                     ("reconstruct", o => ["reconstruct", "--autoencoder", Ae, "--images", Image, "--out", o]),
                 })
        {
            yield return new(name + "-dir-is-file", call(f.FileAsParent), Expect.Refused, "is a file, expected a folder");
            yield return new(name + "-dir-chardev", call(f.CharDevice), Expect.Refused, "not a folder");
            yield return new(name + "-dir-fifo", call(f.Fifo), Expect.Refused, "not a folder");
            yield return new(name + "-dir-empty", call(""), Expect.Refused, "the path is empty");
        }
    }

    static IEnumerable<Case> LatentCases(Fixture f)
    {
        var bad = new (string Name, string Dtype, long[] Shape, int Size, string Contains)[]
        {
            ("zero-batch", "F32", [0, 136, 4, 4], 4, "an empty batch"),
            ("int64", "I64", [1, 136, 4, 4], 8, "floating point"),
            ("int32", "I32", [2, 136, 4, 4], 4, "floating point"),
            ("uint8", "U8", [1, 136, 4, 4], 1, "floating point"),
            ("bool", "BOOL", [1, 136, 4, 4], 1, "floating point"),
            ("channels", "F32", [1, 72, 4, 4], 4, "[B, 136, h, w]"),
            ("rank2", "F32", [136, 16], 4, "[B, 136, h, w]"),
            ("rank5", "F32", [1, 1, 136, 4, 4], 4, "136"),
        };
        foreach (var (name, dtype, shape, size, contains) in bad)
        {
            string file = f.Tensor(name, dtype, shape, size);
            yield return new("decode-" + name, ["decode", "--autoencoder", Ae, "--latents", file, "--out", f.Fresh("")], Expect.Refused, contains);
            if (name != "channels" && name != "rank2" && name != "rank5")
                yield return new("init-noise-" + name, ["sample", "--init-noise", file, "--key", "latent", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, contains);
        }
        string one = f.Tensor("one", "F32", [1, 136, 4, 4], 4);
        yield return new("init-noise-count-vs-n", ["sample", "--init-noise", one, "--key", "latent", "--n", "2", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "leave --n out");
        yield return new("init-noise-count-decides", ["sample", "--init-noise", one, "--key", "latent", "--steps", "1", "--out", f.Fresh(".png")], Expect.Accepted);
        // Grids the model was not trained for decode (the decoder is convolutional) with a warning.
        yield return new("decode-2x8", ["decode", "--autoencoder", Ae, "--latents", f.Tensor("grid2x8", "F32", [1, 136, 2, 8], 4), "--out", f.Fresh("")], Expect.Accepted, "trained on 4x4");
        yield return new("decode-f16", ["decode", "--autoencoder", Ae, "--latents", f.Tensor("half", "F16", [1, 136, 4, 4], 2), "--out", f.Fresh(".safetensors")], Expect.Accepted);
    }

    static IEnumerable<Case> CacheCases(Fixture f)
    {
        const string ok = "\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[136,4,4],\"dtype\":\"float32\",\"class_names\":[\"a\"]";
        var indexes = new (string Name, string Json, string Contains)[]
        {
            ("count-minus-one", $"{{{ok},\"count\":-1,\"shards\":[]}}", "count is -1"),
            ("count-overflow", $"{{{ok},\"count\":2147483648,\"shards\":[]}}", "not a valid latent cache index"),
            ("count-min", $"{{{ok},\"count\":-2147483648,\"shards\":[]}}", "count is"),
            ("shards-null", $"{{{ok},\"count\":1,\"shards\":null}}", "not null"),
            ("shard-null", $"{{{ok},\"count\":1,\"shards\":[null]}}", "shard entries"),
            ("shard-file-null", $"{{{ok},\"count\":1,\"shards\":[{{\"file\":null,\"first\":0,\"count\":1}}]}}", "shard entries"),
            ("shard-negative", $"{{{ok},\"count\":1,\"shards\":[{{\"file\":\"s.safetensors\",\"first\":-5,\"count\":1}}]}}", "expected to start at 0"),
            ("shard-missing", $"{{{ok},\"count\":1,\"shards\":[{{\"file\":\"s.safetensors\",\"first\":0,\"count\":1}}]}}", "s.safetensors"),
            ("shards-short", $"{{{ok},\"count\":5,\"shards\":[]}}", "the index says 5"),
            ("empty-cache", $"{{{ok},\"count\":0,\"shards\":[]}}", "empty"),
            ("shape-null", "{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":null,\"dtype\":\"float32\",\"class_names\":[\"a\"],\"count\":1,\"shards\":[]}", "not null"),
            ("names-null", "{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[136,4,4],\"dtype\":\"float32\",\"class_names\":null,\"count\":1,\"shards\":[]}", "not null"),
            ("name-null", "{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[136,4,4],\"dtype\":\"float32\",\"class_names\":[null],\"count\":1,\"shards\":[]}", "not null"),
            ("dtype-null", "{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[136,4,4],\"dtype\":null,\"class_names\":[\"a\"],\"count\":1,\"shards\":[]}", "not null"),
            ("dtype-int8", $"{{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[136,4,4],\"dtype\":\"int8\",\"class_names\":[\"a\"],\"count\":1,\"shards\":[]}}", "int8"),
            ("shape-negative", "{\"format\":\"svgd_latent_cache\",\"version\":1,\"latent_shape\":[-1,4,4],\"dtype\":\"float32\",\"class_names\":[\"a\"],\"count\":1,\"shards\":[]}", "latent_shape"),
            ("format", $"{{{ok.Replace("svgd_latent_cache", "other")},\"count\":1,\"shards\":[]}}", "format"),
            ("version", $"{{{ok.Replace("\"version\":1", "\"version\":2")},\"count\":1,\"shards\":[]}}", "version 2"),
            ("not-json", "{\"format\": ", "not a valid latent cache index"),
            ("empty-file", "", "not a valid latent cache index"),
            ("array", "[1,2,3]", "not a valid latent cache index"),
            ("json-null", "null", "not a valid latent cache index"),
        };
        foreach (var (name, json, contains) in indexes)
            yield return new("cache-" + name, ["train", "--latents", f.Cache(name, json), "--out", f.Fresh(""), "--preset", "svg-tiny", "--steps", "1"], Expect.Refused, contains);
    }

    static IEnumerable<Case> ListAndCeilingCases(Fixture f)
    {
        foreach (var list in new[] { "sneaker,,bag", ",bag", "bag,", " , ", ",", "0,,1", "bag, ,sneaker" })
        {
            yield return new($"classes-{list}", ["sample", "--classes", list, "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "empty item");
            yield return new($"labels-{list}", ["sample", "--labels", list, "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "empty item");
        }
        foreach (var seeds in new[] { "3,,8", "3,", ",8", "3", "3,8,9", "a,b", "3.5,8" })
            yield return new($"seeds-{seeds}", ["interpolate", "--seeds", seeds, "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "--seeds");
        yield return new("steps-100001", ["sample", "--n", "1", "--steps", "100001", "--out", f.Fresh(".png")], Expect.Refused, "--allow-large");
        yield return new("steps-int-max", ["sample", "--n", "1", "--steps", "2147483647", "--out", f.Fresh(".png")], Expect.Refused, "--allow-large");
        yield return new("vary-steps", ["vary", Image, "--steps", "5000", "--out", f.Fresh(".png")], Expect.Refused, "--allow-large");
        yield return new("interpolate-steps", ["interpolate", "--seeds", "3,8", "--steps", "5000", "--out", f.Fresh(".png")], Expect.Refused, "--allow-large");
        yield return new("sample-eval-steps", ["sample-eval", "--model", Ae, "--autoencoder", Ae, "--steps", "5000", "--out", f.Fresh(".npz")], Expect.Refused, "--allow-large");
        foreach (var shift in new[] { "1e-320", "4.9e-324", "0", "-0.5", "NaN", "1e309" })
            yield return new($"shift-{shift}", ["sample", "--n", "1", "--steps", "1", "--shift", shift, "--out", f.Fresh(".png")], Expect.Refused, "--shift");
        foreach (var option in new[] { "--shift", "--cfg", "--strength" })
            yield return new($"comma{option}", ["vary", Image, "--n", "1", "--steps", "1", option, "0,5", "--out", f.Fresh(".png")], Expect.Refused, "decimal point");
        yield return new("frames-1e8", ["interpolate", "--seeds", "3,8", "--steps", "1", "--frames", "100000000", "--out", f.Fresh(".png")], Expect.Refused, "--allow-large");
        yield return new("frames-1e8-allowed", ["interpolate", "--seeds", "3,8", "--steps", "1", "--frames", "100000000", "--allow-large", "--out", f.Fresh(".png")], Expect.Refused, "of memory");
        yield return new("image-frames-1e8-allowed", ["interpolate", Image, Image, "--frames", "100000000", "--allow-large", "--out", f.Fresh(".png")], Expect.Refused, "of memory");
        foreach (var frames in new[] { "1", "0", "-1" })
            yield return new($"frames-{frames}", ["interpolate", "--seeds", "3,8", "--steps", "1", "--frames", frames, "--out", f.Fresh(".png")], Expect.Refused, "--frames");
        yield return new("n-2e9", ["sample", "--n", "2000000000", "--out", f.Fresh(".png")], Expect.Refused, "--n 2000000000");
        yield return new("n-1e6-memory", ["sample", "--n", "1000000", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "of memory");
        yield return new("recolor-neither", ["recolor", Image, "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "--like");
        string text = f.Fresh(".png");
        File.WriteAllText(text, "not a picture");
        yield return new("recolor-like-text", ["recolor", Image, "--like", text, "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "not a decodable image");
        yield return new("recolor-like-missing", ["recolor", Image, "--like", text + ".missing", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "no such");
        yield return new("recolor-unknown-model", ["recolor", Image, "--class", "0", "--model", "no-such-model", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "bundled");
        yield return new("vary-n-memory", ["vary", Image, "--n", "1000000", "--steps", "1", "--out", f.Fresh(".png")], Expect.Refused, "of memory");
    }

    /// <summary>Seeded random values for every numeric option of the generating commands: valid ones run, the rest are one line.</summary>
    static IEnumerable<Case> RandomCases(Fixture f, Random rng, int count)
    {
        string[] values =
        [
            "abc", "", "-1", "0", "1", "2", "NaN", "nan", "Infinity", "-Infinity", "1e309", "-1e309", "1e-320", "4.9e-324", "2147483648",
            "-2147483649", "9223372036854775808", "0x10", "1,5", "1.5", "+2", " 3", "3 ", "٣", "1_000", "--n", "1e3", "0.0", "-0", "1e-3",
        ];
        var commands = new (string[] Call, string[] Options)[]
        {
            (["sample", "--n", "1", "--steps", "1"], ["--n", "--steps", "--cfg", "--shift", "--seed", "--batch-size"]),
            (["interpolate", "--seeds", "3,8", "--steps", "1", "--frames", "2"], ["--frames", "--steps", "--cfg", "--shift"]),
            (["vary", Image, "--n", "1", "--steps", "1"], ["--strength", "--n", "--steps", "--cfg", "--shift", "--seed"]),
            (["recolor", Image, "--like", Image, "--n", "1", "--steps", "1"], ["--strength", "--n", "--steps", "--cfg", "--seed"]),
        };
        for (int i = 0; i < count; i++)
        {
            var (call, options) = commands[rng.Next(commands.Length)];
            string option = options[rng.Next(options.Length)], value = values[rng.Next(values.Length)];
            var args = call.ToList();
            int at = args.IndexOf(option);
            if (at >= 0) args[at + 1] = value;
            else args.AddRange([option, value]);
            // A valid large count would run for long: those are cases of their own above.
            args.AddRange(["--out", f.Fresh(".png")]);
            yield return new($"random-{call[0]}{option}={value}", args.ToArray(), Expect.Either);
        }
    }

    [Fact]
    public void HostileCommandLinesAreOneLineAndWriteNothing()
    {
        var f = new Fixture();
        try
        {
            var cases = OutputCases(f).Concat(LatentCases(f)).Concat(CacheCases(f)).Concat(ListAndCeilingCases(f)).ToList();
            cases.AddRange(RandomCases(f, new Random(Seed), 300 - cases.Count > 120 ? 300 - cases.Count : 120));
            Assert.True(cases.Count >= 300, $"only {cases.Count} cases");
            var failures = new List<string>();
            var clock = Stopwatch.StartNew();
            foreach (var c in cases)
            {
                var (code, outText, err) = Reference.RunCli(c.Args);
                output.WriteLine($"{c.Name} -> {code} {err.Trim()}");
                if (Verdict(c, code, err) is string why) failures.Add($"{c.Name} ({string.Join(' ', c.Args.Select(a => a.Replace(f.Dir, "")))}): {why}");
                if (code != 0 && c.MustNotExist is string path && (File.Exists(path) || Directory.Exists(path))) failures.Add($"{c.Name}: refused but wrote {path}");
            }
            output.WriteLine($"{cases.Count} cases in {clock.Elapsed.TotalSeconds:F1} s");
            // The special files are what they were, and nothing is left beside them.
            Assert.Equal(OutputTarget.Kind.CharDevice, OutputTarget.KindOf(f.CharDevice));
            Assert.Equal(OutputTarget.Kind.CharDevice, OutputTarget.KindOf("/dev/full"));
            Assert.Equal(OutputTarget.Kind.CharDevice, OutputTarget.KindOf("/dev/null"));
            Assert.Equal(OutputTarget.Kind.Fifo, OutputTarget.KindOf(f.Fifo));
            Assert.Equal(OutputTarget.Kind.Socket, OutputTarget.KindOf(f.SocketPath));
            Assert.Equal(OutputTarget.Kind.Directory, OutputTarget.KindOf(f.Folder));
            Assert.Equal("not a folder", File.ReadAllText(f.FileAsParent));
            Assert.Empty(Directory.EnumerateFiles(f.Dir, "*.tmp-*"));
            Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} cases broke the contract:\n" + string.Join("\n", failures));
        }
        finally
        {
            f.Listener.Dispose();
        }
    }

    [Fact]
    public void AnOutputThroughASymbolicLinkReplacesItsTargetAndKeepsTheLink()
    {
        string dir = Reference.TempDir();
        string target = Path.Combine(dir, "real.png"), link = Path.Combine(dir, "link.png");
        File.WriteAllText(target, "old");
        File.CreateSymbolicLink(link, target);
        var (code, _, err) = Reference.RunCli("sample", "--n", "1", "--steps", "1", "--out", link);
        Assert.True(code == 0, err);
        Assert.NotNull(new FileInfo(link).LinkTarget);
        Assert.Equal(0x89, File.ReadAllBytes(target)[0]); // a PNG now
        // A dangling link creates its target; a chain of links ends at the last.
        string dangling = Path.Combine(dir, "dangling.png"), made = Path.Combine(dir, "made.png"), chain = Path.Combine(dir, "chain.png");
        File.CreateSymbolicLink(dangling, made);
        File.CreateSymbolicLink(chain, dangling);
        (code, _, err) = Reference.RunCli("sample", "--n", "1", "--steps", "1", "--out", chain);
        Assert.True(code == 0, err);
        Assert.NotNull(new FileInfo(chain).LinkTarget);
        Assert.NotNull(new FileInfo(dangling).LinkTarget);
        Assert.Equal(0x89, File.ReadAllBytes(made)[0]);
        Assert.Empty(Directory.EnumerateFiles(dir, "*.tmp-*"));
        // The library's writer follows the same rule for every caller (the server included).
        Assert.Contains("not a regular file", Assert.Throws<SvgdException>(() => AtomicFile.Write("/dev/full", fs => fs.WriteByte(1))).Message);
    }

    [Fact]
    public void AnImageFolderWithASymbolicLinkLoopIsListedOnce()
    {
        string dir = Reference.TempDir(), cls = Directory.CreateDirectory(Path.Combine(dir, "shirt")).FullName;
        var images = Data.ImageFiles.List(AutoencoderTrainingTests.FashionMnist).Take(3).ToList();
        foreach (var img in images) File.Copy(img, Path.Combine(cls, Path.GetFileName(img)));
        Directory.CreateSymbolicLink(Path.Combine(cls, "loop"), dir);
        Directory.CreateSymbolicLink(Path.Combine(dir, "again"), cls);
        Assert.Equal(3, Data.ImageFiles.List(dir).Count);
        var folder = new Data.ImageFolder(dir);
        Assert.Equal(3, folder.Count);
        Assert.Equal(new[] { "shirt" }, folder.ClassNames);
    }

    [Fact]
    public void TrainingRefusesACorruptImageBeforeItStartsAndWarnsOnlyAfterTheOptionsPass()
    {
        string dir = Reference.TempDir(), cls = Directory.CreateDirectory(Path.Combine(dir, "shirt")).FullName;
        foreach (var img in Data.ImageFiles.List(AutoencoderTrainingTests.FashionMnist).Take(4)) File.Copy(img, Path.Combine(cls, Path.GetFileName(img)));
        string bad = Path.Combine(cls, "zz-bad.png");
        File.WriteAllBytes(bad, "\x89PNG\r\n\x1a\nthis is no image"u8.ToArray());
        string o = Path.Combine(dir, "run");
        var clock = Stopwatch.StartNew();
        var (code, _, err) = Reference.RunCli("train-autoencoder", "--images", dir, "--out", o, "--preset", "svg-resnet18-32px", "--steps", "1000");
        Assert.Equal(1, code);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("zz-bad.png", err);
        Assert.False(File.Exists(Path.Combine(o, "last.safetensors")));
        output.WriteLine($"refused in {clock.Elapsed.TotalSeconds:F2} s: {err.Trim()}");

        // No preset: the one error line, without the LPIPS warning that used to come first.
        File.Delete(bad);
        (code, _, err) = Reference.RunCli("train-autoencoder", "--images", dir, "--out", o, "--steps", "1");
        Assert.Equal(1, code);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", err);
    }

    /// <summary>Why a case broke the contract, or null.</summary>
    static string? Verdict(Case c, int code, string err)
    {
        if (code is not (0 or 1)) return $"exit {code}: {err.Trim()}";
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("warning: ", StringComparison.Ordinal)).ToArray();
        if (code == 1)
        {
            if (c.Expect == Expect.Accepted) return $"refused: {err.Trim()}";
            if (lines.Length != 1 || !lines[0].StartsWith("error: ", StringComparison.Ordinal)) return $"not one error line: {err.Trim()}";
            if (c.Contains != null && !lines[0].Contains(c.Contains, StringComparison.Ordinal)) return $"the line does not say '{c.Contains}': {lines[0]}";
            return null;
        }
        if (c.Expect == Expect.Refused) return "accepted, should be refused";
        if (lines.Length != 0) return $"succeeded with errors on stderr: {err.Trim()}";
        if (c.Contains != null && !err.Contains(c.Contains, StringComparison.Ordinal)) return $"no warning saying '{c.Contains}': {err.Trim()}";
        return null;
    }
}
