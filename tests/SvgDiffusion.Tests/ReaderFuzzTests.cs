using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using SvgDiffusion.Checkpoints;
using SvgDiffusion.Evaluation;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static SvgDiffusion.Tests.CorruptFiles;

namespace SvgDiffusion.Tests;

/// <summary>
/// Seeded damage to real files: every reader must answer a corrupt safetensors, zip or legacy pickle, npz,
/// PNG or JPEG with exit 1 and one line naming the file (or accept it, when an edit left it valid), never
/// with an internal error. Most edits are deliberate (lengths, shapes, dtypes, offsets, CRCs); random
/// flips and cuts fill in what nobody thought of.
/// </summary>
public class ReaderFuzzTests(ITestOutputHelper output)
{
    const int Seed = 20261202;

    enum Via { Inspect, Npz, Image }

    sealed record Case(string Name, string Ext, Via Via, byte[] Bytes);

    [Fact]
    public void CorruptFilesGiveOneLineNamingTheFile()
    {
        var rng = new Random(Seed);
        var cases = new List<Case>();
        cases.AddRange(SafeTensorsCases(rng));
        cases.AddRange(ZipPickleCases(rng));
        cases.AddRange(LegacyPickleCases(rng));
        cases.AddRange(NpzCases(rng));
        cases.AddRange(ImageCases(rng));
        Assert.True(cases.Count >= 200, $"only {cases.Count} cases");

        string dir = Reference.TempDir();
        string goodNpz = Path.Combine(dir, "good.npz");
        var (mu, sigma) = FidStats();
        Npz.Save(goodNpz, new Dictionary<string, torch.Tensor> { ["mu"] = mu, ["sigma"] = sigma });
        string encoder = Reference.File_("dinov3_swiglu.pth");
        var failures = new List<string>();
        int rejected = 0, images = 0;
        var byKind = new Dictionary<string, (int Cases, int Rejected, double Seconds)>();
        for (int i = 0; i < cases.Count; i++)
        {
            var c = cases[i];
            string file = Path.Combine(dir, $"case{i:000}-{c.Name}{c.Ext}");
            File.WriteAllBytes(file, c.Bytes);
            using var scope = torch.NewDisposeScope();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var (code, err) = c.Via switch
            {
                Via.Inspect => RunCli("inspect", file),
                Via.Npz => RunCli("fid", file, goodNpz),
                // Loading a model per image costs a quarter second: a sample of the images goes through the
                // command, the rest through the decoder it calls, judged as the command's guard would.
                _ when images++ % 6 == 0 => RunCli("features", "--encoder", encoder, "--images", file, "--size", "32", "--out", Path.Combine(dir, $"out{i}.safetensors")),
                _ => AsGuarded(() => Data.ImageFiles.LoadRgb(file).Dispose()),
            };
            output.WriteLine($"{Path.GetFileName(file)} -> {code} {err.Trim().Replace(dir, "")}");
            if (Verdict(file, code, err) is string why) failures.Add($"{Path.GetFileName(file)}: {why}");
            if (code != 0) rejected++;
            string kind = c.Ext + "/" + c.Name.Split('-')[0];
            var (n, r, t) = byKind.GetValueOrDefault(kind);
            byKind[kind] = (n + 1, r + (code != 0 ? 1 : 0), t + clock.Elapsed.TotalSeconds);
        }
        foreach (var (k, (n, r, t)) in byKind.OrderBy(kv => kv.Key)) output.WriteLine($"{k}: {r}/{n} rejected, {t:F2} s");
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} cases broke the one-line contract:\n" + string.Join("\n", failures));
        // Most edits must really damage the file, or the test exercises the happy path instead of the readers.
        Assert.True(rejected >= cases.Count * 3 / 4, $"only {rejected} of {cases.Count} cases were rejected");
    }

    /// <summary>What <c>SvgdCli.Guard</c> makes of a command body: exit 1 and "error: message" for a user error, exit 2 for anything else.</summary>
    static (int Code, string Err) AsGuarded(Action body)
    {
        try { body(); return (0, ""); }
        catch (SvgdException e) { return (1, $"error: {e.Message}\n"); }
        catch (Exception e) { return (2, $"error: {e.GetType().Name}: {e.Message}\n"); }
    }

    // ---------------- generic damage ----------------

    static byte[] Flip(Random rng, byte[] src, int start, int end, int count)
    {
        var b = (byte[])src.Clone();
        for (int k = 0; k < count; k++) b[rng.Next(start, Math.Max(start + 1, Math.Min(end, b.Length)))] ^= (byte)rng.Next(1, 256);
        return b;
    }

    static byte[] Cut(Random rng, byte[] src) => src[..rng.Next(0, src.Length)];

    static IEnumerable<Case> Generic(Random rng, string tag, string ext, Via via, byte[] src, int flips, int cuts, int headRegion)
    {
        for (int i = 0; i < flips; i++)
            yield return new Case($"{tag}-flip{i}", ext, via, Flip(rng, src, 0, i % 2 == 0 ? headRegion : src.Length, 1 + rng.Next(4)));
        for (int i = 0; i < cuts; i++)
            yield return new Case($"{tag}-cut{i}", ext, via, Cut(rng, src));
    }

    // ---------------- safetensors ----------------

    static IEnumerable<Case> SafeTensorsCases(Random rng)
    {
        var small = File.ReadAllBytes(Path.Combine(Reference.RepoRoot, "models", "fashion-mnist", "latent-stats.safetensors"));
        var big = File.ReadAllBytes(Reference.File_("dinov3_mlp.io.safetensors"));
        var cases = new List<Case>();
        Case C(string name, byte[] b) => new("st-" + name, ".safetensors", Via.Inspect, b);

        foreach (var (tag, src) in new[] { ("small", small), ("big", big) })
        {
            long n = BitConverter.ToInt64(src, 0);
            foreach (long len in new[] { 0L, -1, 1, n - 1, n + 1, src.Length - 8, src.Length, long.MaxValue, long.MinValue, 1L << 40 })
            {
                var b = (byte[])src.Clone();
                BitConverter.GetBytes(len).CopyTo(b, 0);
                cases.Add(C($"{tag}-len{len}", b));
            }
            cases.AddRange(Generic(rng, "st-" + tag, ".safetensors", Via.Inspect, src, 8, 4, (int)n + 8));
        }

        var (header, data) = SplitSafeTensors(big);
        var names = header.Where(kv => kv.Key != "__metadata__").Select(kv => kv.Key).ToList();
        byte[] With(Action<JsonObject> edit)
        {
            var h = JsonNode.Parse(header.ToJsonString())!.AsObject();
            edit(h);
            return SafeTensorsBytes(h.ToJsonString(), data);
        }
        JsonObject Entry(JsonObject h) => h[names[rng.Next(names.Count)]]!.AsObject();

        var shapes = new (string, JsonNode?)[]
        {
            ("neg", new JsonArray(-1, 4)), ("huge", new JsonArray(1L << 62)), ("overflow", new JsonArray(1L << 40, 1L << 40, 1L << 40)),
            ("frac", new JsonArray(1.5, 2)), ("text", new JsonArray("2", "3")), ("null", null), ("scalar", JsonValue.Create(7)),
            ("nested", new JsonArray(new JsonArray(2))), ("bigint", JsonNode.Parse("[1e30]")), ("wrongcount", new JsonArray(3, 3, 3)),
        };
        foreach (var (tag, shape) in shapes) cases.Add(C($"shape-{tag}", With(h => Entry(h)["shape"] = shape?.DeepClone())));
        cases.Add(C("shape-missing", With(h => Entry(h).Remove("shape"))));

        foreach (var dt in new JsonNode?[] { "F99", "I64", "U8", "", JsonValue.Create(3), null, new JsonArray("F32") })
            cases.Add(C($"dtype-{dt?.ToJsonString().Replace("\"", "") ?? "null"}", With(h => Entry(h)["dtype"] = dt?.DeepClone())));
        cases.Add(C("dtype-missing", With(h => Entry(h).Remove("dtype"))));

        var offsets = new (string, JsonNode?)[]
        {
            ("swapped", null), ("neg", new JsonArray(-16, 0)), ("past", new JsonArray(data.Length, data.Length + 64)),
            ("three", new JsonArray(0, 4, 8)), ("text", new JsonArray("0", "4")), ("one", new JsonArray(0)), ("huge", JsonNode.Parse("[0, 1e40]")),
            ("max", new JsonArray(long.MaxValue - 8, long.MaxValue)),
        };
        foreach (var (tag, off) in offsets)
            cases.Add(C($"offsets-{tag}", With(h =>
            {
                var e = Entry(h);
                if (off != null) { e["data_offsets"] = off.DeepClone(); return; }
                var o = e["data_offsets"]!.AsArray();
                e["data_offsets"] = new JsonArray(o[1]!.GetValue<long>(), o[0]!.GetValue<long>());
            })));

        foreach (var (tag, entry) in new (string, JsonNode?)[] { ("number", JsonValue.Create(1)), ("string", "x"), ("array", new JsonArray(1, 2)), ("null", null), ("empty", new JsonObject()) })
            cases.Add(C($"entry-{tag}", With(h => h[names[0]] = entry?.DeepClone())));

        foreach (var (tag, meta) in new (string, JsonNode?)[]
        {
            ("number", new JsonObject { ["k"] = 1 }), ("object", new JsonObject { ["k"] = new JsonObject() }), ("null", new JsonObject { ["k"] = null }),
            ("array", new JsonArray("a")), ("string", "meta"), ("bool", new JsonObject { ["format"] = true }),
        })
            cases.Add(C($"meta-{tag}", With(h => h["__metadata__"] = meta?.DeepClone())));

        // Duplicates cannot be made through JsonObject: spliced into the text.
        string text = header.ToJsonString();
        string first = names[0];
        string firstEntry = "\"" + first + "\":" + header[first]!.ToJsonString();
        cases.Add(C("dup-tensor", SafeTensorsBytes(text.Replace(firstEntry, firstEntry + "," + firstEntry), data)));
        cases.Add(C("dup-meta", SafeTensorsBytes("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}," + text[1..], data)));
        cases.Add(C("dup-metablock", SafeTensorsBytes("{\"__metadata__\":{},\"__metadata__\":{}," + text[1..], data)));
        cases.Add(C("name-newline", SafeTensorsBytes(text.Replace("\"" + first + "\"", "\"bad\\nname\\u001b[31m\""), data)));
        cases.Add(C("json-array", SafeTensorsBytes("[" + text + "]", data)));
        cases.Add(C("json-string", SafeTensorsBytes("\"" + first + "\"", data)));
        cases.Add(C("json-unclosed", SafeTensorsBytes(text[..^1], data)));
        cases.Add(C("json-trailing", SafeTensorsBytes(text + "}}", data)));
        cases.Add(C("json-deep", SafeTensorsBytes(new string('[', 5000) + new string(']', 5000), data)));
        var nonUtf8 = SafeTensorsBytes(text, data);
        nonUtf8[8 + 3] = 0xFF;
        cases.Add(C("json-notutf8", nonUtf8));
        return cases;
    }

    // ---------------- PyTorch zip pickles ----------------

    static IEnumerable<Case> ZipPickleCases(Random rng)
    {
        var cases = new List<Case>();
        Case C(string name, byte[] b) => new("zip-" + name, ".pt", Via.Inspect, b);
        var stats = File.ReadAllBytes(Reference.File_("svg_latent_stats_dinov3_vitsp.pt"));
        var dit = File.ReadAllBytes(Reference.File_("svg_dit.pt"));

        foreach (var (tag, src) in new[] { ("stats", stats), ("dit", dit) })
        {
            var layout = ZipLayout(src);
            var pkl = layout.First(e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal));
            var storages = layout.Where(e => e.Name.Contains("/data/", StringComparison.Ordinal) && e.CompressedSize > 0).ToList();
            // Damaged storage bytes with the stored CRC left alone: what zipfile.testzip() reports.
            for (int i = 0; i < 4; i++)
            {
                var s = storages[rng.Next(storages.Count)];
                cases.Add(C($"{tag}-crcdata{i}", Flip(rng, src, s.DataStart, s.DataStart + s.CompressedSize, 1)));
            }
            cases.Add(C($"{tag}-crcpkl", Flip(rng, src, pkl.DataStart, pkl.DataStart + pkl.CompressedSize, 1)));
            foreach (var e in new[] { pkl, storages[0] })
            {
                var b = (byte[])src.Clone();
                b[e.Central + 16] ^= 0x5a; // central CRC field
                cases.Add(C($"{tag}-crcfield-{Path.GetFileName(e.Name)}", b));
                var m = (byte[])src.Clone();
                BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(e.Central + 10), 99); // unknown compression method
                BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(e.Local + 8), 99);
                cases.Add(C($"{tag}-method-{Path.GetFileName(e.Name)}", m));
                foreach (uint size in new[] { 0u, 1u, 0x7FFFFFF0u, 0x40000000u, (uint)e.CompressedSize + 1 })
                {
                    var u = (byte[])src.Clone();
                    BinaryPrimitives.WriteUInt32LittleEndian(u.AsSpan(e.Central + 24), size); // uncompressed size
                    cases.Add(C($"{tag}-usize{size}-{Path.GetFileName(e.Name)}", u));
                }
                var c2 = (byte[])src.Clone();
                BinaryPrimitives.WriteUInt32LittleEndian(c2.AsSpan(e.Central + 20), 0x7FFFFFF0u); // compressed size
                cases.Add(C($"{tag}-csize-{Path.GetFileName(e.Name)}", c2));
                var lo = (byte[])src.Clone();
                BinaryPrimitives.WriteUInt32LittleEndian(lo.AsSpan(e.Central + 42), (uint)src.Length - 10); // local header offset
                cases.Add(C($"{tag}-localoffset-{Path.GetFileName(e.Name)}", lo));
            }
            var renamed = (byte[])src.Clone();
            renamed[pkl.Central + 46 + pkl.Name.Length - 1] = (byte)'x'; // data.pkx: no pickle
            cases.Add(C($"{tag}-nopkl", renamed));
            cases.AddRange(Generic(rng, "zip-" + tag, ".pt", Via.Inspect, src, 6, 4, Math.Min(src.Length, 4096)));
        }

        // Pickle-level damage inside an intact archive (CRCs recomputed), so the pickle machine sees it.
        var entries = Unzip(stats);
        int pi = Array.FindIndex(entries, e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal));
        byte[] Repack(byte[] pickle) { var copy = entries.ToArray(); copy[pi] = (copy[pi].Name, pickle); return Zip(copy); }
        var program = entries[pi].Data;
        for (int i = 0; i < 14; i++) cases.Add(C($"pkl-flip{i}", Repack(Flip(rng, program, 0, program.Length, 1 + rng.Next(3)))));
        for (int i = 0; i < 4; i++) cases.Add(C($"pkl-cut{i}", Repack(Cut(rng, program))));

        foreach (var (tag, spec) in StructuredSpecs())
            cases.Add(C($"spec-{tag}", TorchZip(StateDictPickle(spec))));
        cases.Add(C("spec-bigendian", TorchZip(StateDictPickle(new TensorSpec()), byteorder: "big")));
        cases.Add(C("spec-shortstorage", TorchZip(StateDictPickle(new TensorSpec()), storage: new byte[10])));
        cases.Add(C("spec-nostorage", Zip(("archive/data.pkl", StateDictPickle(new TensorSpec())))));
        cases.Add(C("spec-dupentry", Zip(("archive/data.pkl", StateDictPickle(new TensorSpec())), ("archive/data/0", new byte[24]), ("archive/data/0", new byte[3]))));
        return cases;
    }

    /// <summary>Hand-built pickles, each wrong in one named way.</summary>
    static IEnumerable<(string, TensorSpec)> StructuredSpecs()
    {
        var d = new TensorSpec();
        yield return ("negsize", d with { StorageSize = p => p.Int(-6) });
        yield return ("hugesize", d with { StorageSize = p => p.Int(1L << 60) });
        yield return ("textsize", d with { StorageSize = p => p.Str("6") });
        yield return ("bigintsize", d with { StorageSize = p => p.Op(0x8a, 12).Op(new byte[12] { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 }) });
        yield return ("negoffset", d with { Offset = p => p.Int(-1) });
        yield return ("bigoffset", d with { Offset = p => p.Int(long.MaxValue) });
        yield return ("textoffset", d with { Offset = p => p.Str("0") });
        yield return ("negstride", d with { Stride = p => p.Tuple(-3, 1) });
        yield return ("hugestride", d with { Stride = p => p.Tuple(long.MaxValue / 2, 1) });
        yield return ("negdim", d with { Size = p => p.Tuple(-2, 3) });
        yield return ("hugedims", d with { Size = p => p.Tuple(1L << 40, 1L << 40), Stride = p => p.Tuple(0, 0) });
        yield return ("zerostride", d with { Size = p => p.Tuple(1L << 31, 1L << 10), Stride = p => p.Tuple(0, 0) });
        yield return ("sizeint", d with { Size = p => p.Int(6) });
        yield return ("sizenone", d with { Size = p => p.Op((byte)'N') });
        yield return ("sizetext", d with { Size = p => p.Op((byte)'(').Str("2").Str("3").Op((byte)'t') });
        yield return ("sizedict", d with { Size = p => p.Op((byte)'}') });
        yield return ("rankmismatch", d with { Stride = p => p.Tuple(1) });
        yield return ("pastend", d with { Size = p => p.Tuple(3, 3) });
        yield return ("badtype", d with { StorageType = "FunnyStorage" });
        yield return ("missingkey", d with { Key = "7" });
        yield return ("memotext", d with { Tail = p => p.Raw("pabc\n").Op((byte)'0') });
        yield return ("memoget", d with { Tail = p => p.Raw("g12x\n").Op((byte)'0') });
        yield return ("memomissing", d with { Tail = p => p.Op((byte)'h', 200, (byte)'0') });
        yield return ("memohuge", d with { Tail = p => p.Raw("p99999999999999999999999\n") });
        yield return ("intliteral", d with { Tail = p => p.Raw("Ifoo\n").Op((byte)'0') });
        yield return ("floatliteral", d with { Tail = p => p.Raw("Fnan?\n").Op((byte)'0') });
        yield return ("longliteral", d with { Tail = p => p.Raw("L123456789012345678901234567890L\n").Op((byte)'0') });
        yield return ("badopcode", d with { Tail = p => p.Op(0xff) });
        yield return ("underflow", d with { Tail = p => p.Op((byte)'0', (byte)'0') });
        yield return ("nomark", d with { Tail = p => p.Op((byte)'t') });
        yield return ("reducenottuple", d with { Tail = p => p.Op((byte)'0').Global("builtins", "dict").Int(3).Op((byte)'R') });
        yield return ("callnonglobal", d with { Tail = p => p.Op((byte)'0').Int(3).Op((byte)')', (byte)'R') });
        yield return ("persidnottuple", d with { Tail = p => p.Op((byte)'0').Str("storage").Op((byte)'Q') });
        yield return ("textpersid", d with { Tail = p => p.Raw("P0\n") });
        yield return ("appendnotlist", d with { Tail = p => p.Int(1).Op((byte)'a') });
        yield return ("setitemnotdict", d with { Tail = p => p.Op((byte)'0').Int(1).Int(2).Int(3).Op((byte)'s') });
        yield return ("binunicodehuge", d with { Tail = p => p.Op((byte)'X', 0xff, 0xff, 0xff, 0x7f) });
        yield return ("binunicode8huge", d with { Tail = p => p.Op(0x8d).Op(BitConverter.GetBytes(long.MaxValue - 4)) });
        yield return ("long4neg", d with { Tail = p => p.Op(0x8b).Op(BitConverter.GetBytes(-5)) });
        yield return ("framehuge", d with { Tail = p => p.Op(0x95).Op(BitConverter.GetBytes(long.MaxValue)) });
        // The dict put into itself: {"w": tensor, "self": <the dict>}.
        yield return ("selfref", d with { Tail = p => p.Op(0x94).Str("self").Op((byte)'h', 0, (byte)'s') });
        yield return ("nostop", d with { Tail = p => p.Op((byte)'(') });
    }

    // ---------------- legacy pickles ----------------

    static IEnumerable<Case> LegacyPickleCases(Random rng)
    {
        var cases = new List<Case>();
        Case C(string name, byte[] b) => new("legacy-" + name, ".pth", Via.Inspect, b);
        var good = TorchLegacy(StateDictPickle(new TensorSpec()));
        cases.Add(C("count-neg", TorchLegacy(StateDictPickle(new TensorSpec()), storedCount: -6)));
        cases.Add(C("count-huge", TorchLegacy(StateDictPickle(new TensorSpec()), storedCount: long.MaxValue / 2)));
        cases.Add(C("count-more", TorchLegacy(StateDictPickle(new TensorSpec()), storedCount: 7)));
        cases.Add(C("data-short", TorchLegacy(StateDictPickle(new TensorSpec()), storage: new byte[12], storedCount: 6)));
        cases.Add(C("keys-extra", TorchLegacy(StateDictPickle(new TensorSpec()), keys: new[] { "0", "1" })));
        cases.Add(C("keys-none", TorchLegacy(StateDictPickle(new TensorSpec()), keys: Array.Empty<string>())));
        cases.Add(C("keys-other", TorchLegacy(StateDictPickle(new TensorSpec()), keys: new[] { "9" })));
        cases.Add(C("size-huge", TorchLegacy(StateDictPickle(new TensorSpec { StorageSize = p => p.Int(1L << 40) }))));
        cases.Add(C("twotypes", TorchLegacy(StateDictPickle(new TensorSpec
        {
            Tail = p => p.Str("v").Global("torch._utils", "_rebuild_tensor_v2").Op((byte)'(', (byte)'(').Str("storage").Global("torch", "LongStorage")
                .Str("0").Str("cpu").Int(3).Op((byte)'t', (byte)'Q').Int(0).Tuple(3).Tuple(1).Op(0x89).Op((byte)'N', (byte)'t', (byte)'R', (byte)'s'),
        }))));
        foreach (var (tag, spec) in StructuredSpecs().Where((_, i) => i % 2 == 0))
            cases.Add(C($"spec-{tag}", TorchLegacy(StateDictPickle(spec))));
        var protocol = (byte[])good.Clone();
        protocol[15 + 3] = 0x42; // the protocol version 1001 (J e9 03 00 00) becomes another number
        cases.Add(C("protocol", protocol));
        cases.AddRange(Generic(rng, "legacy", ".pth", Via.Inspect, good, 10, 4, good.Length - 32));
        return cases;
    }

    // ---------------- npz ----------------

    static IEnumerable<Case> NpzCases(Random rng)
    {
        var cases = new List<Case>();
        Case C(string name, byte[] b) => new("npz-" + name, ".npz", Via.Npz, b);
        var (mu, sigma) = FidStats();
        var muNpy = NpyBytes(mu);
        var sigmaNpy = NpyBytes(sigma);
        var stored = Zip(("mu.npy", muNpy), ("sigma.npy", sigmaNpy));
        var deflated = Zip(new[] { ("mu.npy", muNpy), ("sigma.npy", sigmaNpy) }, CompressionLevel.Optimal);
        string descr = Npy.ParseDescr("<f8", "x").Dtype == mu.dtype ? "<f8" : "<f4";
        byte[] muData = muNpy[(int)Npy.ReadHeader(new MemoryStream(muNpy), "mu").HeaderLength..];
        byte[] WithMu(byte[] npy) => Zip(("mu.npy", npy), ("sigma.npy", sigmaNpy));
        string Dict(string d, string f, string s) => $"{{'descr': {d}, 'fortran_order': {f}, 'shape': {s}, }}";
        long n = mu.shape[0];

        foreach (var (tag, dict) in new[]
        {
            ("descr-bogus", Dict("'<q9'", "False", $"({n},)")), ("descr-struct", Dict("[('a', '<f8')]", "False", $"({n},)")),
            ("descr-int", Dict("'<i8'", "False", $"({n},)")), ("descr-short", Dict("'f'", "False", $"({n},)")),
            ("fortran-maybe", Dict($"'{descr}'", "'maybe'", $"({n},)")), ("shape-neg", Dict($"'{descr}'", "False", "(-4,)")),
            ("shape-huge", Dict($"'{descr}'", "False", "(1099511627776, 1099511627776)")), ("shape-overflow", Dict($"'{descr}'", "False", "(99999999999999999999,)")),
            ("shape-text", Dict($"'{descr}'", "False", "('4',)")), ("shape-more", Dict($"'{descr}'", "False", $"({n + 1},)")),
            ("shape-matrix", Dict($"'{descr}'", "False", $"({n}, 1)")), ("shape-manydims", Dict($"'{descr}'", "False", "(" + string.Join(", ", Enumerable.Repeat("1", 80)) + $", {n})")),
            ("dict-missing", $"{{'descr': '{descr}', 'shape': ({n},), }}"), ("dict-list", "['descr']"), ("dict-unclosed", "{'descr': '<f8', 'fortran_order': False, 'shape': ("),
            ("dict-garbage", "\u0001\u0002\u0003"),
        })
            cases.Add(C(tag, WithMu(NpyWithHeader(dict, muData))));
        cases.Add(C("version9", WithMu(NpyWithHeader(Dict($"'{descr}'", "False", $"({n},)"), muData, major: 9))));
        var badLen = (byte[])muNpy.Clone();
        BinaryPrimitives.WriteUInt16LittleEndian(badLen.AsSpan(8), 0xFFFF);
        cases.Add(C("headerlen", WithMu(badLen)));
        var magic = (byte[])muNpy.Clone();
        magic[1] = (byte)'X';
        cases.Add(C("magic", WithMu(magic)));
        cases.Add(C("data-short", WithMu(muNpy[..^3])));
        cases.Add(C("no-mu", Zip(("sigma.npy", sigmaNpy))));
        cases.Add(C("sigma-shape", Zip(("mu.npy", muNpy), ("sigma.npy", muNpy))));
        cases.Add(C("sigma-int", Zip(("mu.npy", muNpy), ("sigma.npy", NpyBytes(torch.ones(n, n, dtype: torch.int64))))));

        foreach (var (tag, src) in new[] { ("stored", stored), ("deflated", deflated) })
        {
            var layout = ZipLayout(src);
            var sig = layout.First(e => e.Name == "sigma.npy");
            cases.Add(C($"{tag}-crcdata", Flip(rng, src, sig.DataStart + sig.CompressedSize / 2, sig.DataStart + sig.CompressedSize, 1)));
            var crc = (byte[])src.Clone();
            crc[sig.Central + 17] ^= 0x01;
            cases.Add(C($"{tag}-crcfield", crc));
            var usize = (byte[])src.Clone();
            BinaryPrimitives.WriteUInt32LittleEndian(usize.AsSpan(sig.Central + 24), 0x7FFFFFF0u);
            cases.Add(C($"{tag}-usize", usize));
            cases.AddRange(Generic(rng, "npz-" + tag, ".npz", Via.Npz, src, 4, 3, Math.Min(src.Length, 512)));
        }
        return cases;
    }

    /// <summary>Statistics as pytorch-fid writes them (float64 mu and sigma), of the reference Fréchet case's features.</summary>
    static (torch.Tensor Mu, torch.Tensor Sigma) FidStats()
    {
        var f = Reference.Io("frechet")["case1.features1"];
        var mu = f.mean(new long[] { 0 });
        var centred = f - mu;
        var sigma = centred.t().matmul(centred) / (f.shape[0] - 1);
        return (mu, sigma);
    }

    // ---------------- images ----------------

    static IEnumerable<Case> ImageCases(Random rng)
    {
        var cases = new List<Case>();
        var pngs = Directory.GetFiles(Path.Combine(Reference.RepoRoot, "tests", "data", "fashion-mnist"), "*.png", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        var png = File.ReadAllBytes(pngs[rng.Next(pngs.Count)]);
        Case P(string name, byte[] b) => new("png-" + name, ".png", Via.Image, b);
        Case J(string name, byte[] b) => new("jpg-" + name, ".jpg", Via.Image, b);
        foreach (var (w, h) in new (uint, uint)[] { (100000, 100000), (20000, 1), (1, 20000), (16384, 16385), (0, 28), (28, 0), (0x7FFFFFFF, 0x7FFFFFFF), (0x80000000, 28), (16384, 16) })
            cases.Add(P($"size{w}x{h}", PngWithSize(png, w, h)));
        var sig = (byte[])png.Clone();
        sig[1] = (byte)'Q';
        cases.Add(P("signature", sig));
        var chunkLen = (byte[])png.Clone();
        BinaryPrimitives.WriteUInt32BigEndian(chunkLen.AsSpan(8), 0x7FFFFFF0u);
        cases.Add(P("ihdrlen", chunkLen));
        cases.Add(P("empty", Array.Empty<byte>()));
        cases.Add(P("text", Encoding.ASCII.GetBytes("not an image\n")));
        cases.AddRange(Generic(rng, "png", ".png", Via.Image, png, 8, 5, 64));

        var jpg = Jpeg(png);
        int at = JpegSizeField(jpg);
        foreach (var (w, h) in new (ushort, ushort)[] { (65535, 65535), (20000, 20000), (0, 28), (28, 0), (16385, 1) })
        {
            var b = (byte[])jpg.Clone();
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(at), h);
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(at + 2), w);
            cases.Add(J($"size{w}x{h}", b));
        }
        cases.AddRange(Generic(rng, "jpg", ".jpg", Via.Image, jpg, 8, 5, Math.Min(jpg.Length, 256)));
        return cases;
    }
}
