using System.Text;
using System.Text.Json;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// POST /api/recolor against a real Kestrel: the library's <see cref="GenerationService.Recolor"/> images byte for
/// byte, at the model's size, the same for the same seed; bad requests refused with one line naming the field.
/// </summary>
[Collection("studio")]
public class StudioRecolorTests(StudioFixture fx, ITestOutputHelper log)
{
    static readonly GenerationLimits Limits = new(64, 200);

    static byte[] FileBytes(string cls, int which = 0) => File.ReadAllBytes(BundledService.ImagePath(cls, which));

    static async Task<JsonElement> JsonOf(HttpResponseMessage r)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, $"{(int)r.StatusCode}: {body}");
        using var doc = JsonDocument.Parse(body);
        return doc.RootElement.Clone();
    }

    static byte[] Png(JsonElement image) => Convert.FromBase64String(image.GetProperty("png").GetString()!);

    [Fact]
    public async Task RecolorAnswersTheLibrarysImagesAtTheModelsSizeTheSameForASeed()
    {
        byte[] source = FileBytes("sneaker"), like = FileBytes("bag");
        (string, string)[] fields = [("strength", "0.4"), ("n", "2"), ("steps", "3"), ("seed", "7")];
        var first = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/recolor", fields, [("image", source), ("like", like)])));
        var again = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/recolor", fields, [("image", source), ("like", like)])));
        var otherSeed = await JsonOf(await fx.Http.SendAsync(StudioFixture.Form("/api/recolor", [("strength", "0.4"), ("n", "2"), ("steps", "3"), ("seed", "8")], [("image", source), ("like", like)])));
        var images = first.GetProperty("images");
        Assert.Equal(2, images.GetArrayLength());

        var s = fx.Model.Service;
        using var ts = ImageFiles.DecodeRgb(source, "source");
        using var tl = ImageFiles.DecodeRgb(like, "like");
        var plan = s.Plan(new GenerationRequest { N = 2, Steps = 3, Seed = 7 }, Limits, unconditionalByDefault: true, classesField: "class");
        using (var r = s.Recolor(ts, tl, 0.4, plan))
            for (int i = 0; i < 2; i++)
            {
                byte[] png = Png(images[i]);
                using var decoded = ImageFiles.DecodeRgb(png, $"image {i}");
                Assert.Equal(new long[] { 3, fx.Model.Editor.ImageSize, fx.Model.Editor.ImageSize }, decoded.shape);
                Assert.Equal(ImageFiles.EncodePng(r.Images![i]), png);
                Assert.Equal(png, Png(again.GetProperty("images")[i]));
                Assert.NotEqual(png, Png(otherSeed.GetProperty("images")[i]));
            }
        var settings = first.GetProperty("settings");
        Assert.Equal(0.4, settings.GetProperty("strength").GetDouble());
        Assert.True(settings.GetProperty("like").GetBoolean());
        Assert.Equal(7, settings.GetProperty("seed").GetInt64());
        Assert.Equal("fashion-mnist", settings.GetProperty("model").GetString());

        // A class instead of a reference, as base64 in JSON; one edit's "grid" is the image itself (as svgd recolor --out).
        string body = JsonSerializer.Serialize(new { image = Convert.ToBase64String(source), @class = "bag", strength = 1, steps = 3, seed = 2 });
        var byClass = await JsonOf(await fx.Http.SendAsync(StudioFixture.Json("/api/recolor", body)));
        Assert.Equal(1, byClass.GetProperty("images").GetArrayLength());
        Assert.Equal("bag", byClass.GetProperty("images")[0].GetProperty("class").GetString());
        Assert.False(byClass.GetProperty("settings").GetProperty("like").GetBoolean());
        var classPlan = s.Plan(new GenerationRequest { Classes = new[] { "bag" }, N = 1, Steps = 3, Seed = 2 }, Limits, unconditionalByDefault: true, classesField: "class");
        using (var r = s.Recolor(ts, null, 1, classPlan))
            Assert.Equal(ImageFiles.EncodePng(r.Images![0]), Png(byClass.GetProperty("images")[0]));
        Assert.Equal(Png(byClass.GetProperty("images")[0]), Convert.FromBase64String(byClass.GetProperty("grid").GetString()!));
        using (var grid = ImageFiles.DecodeRgb(Convert.FromBase64String(first.GetProperty("grid").GetString()!), "grid"))
            Assert.True(grid.shape[2] > 2 * fx.Model.Editor.ImageSize, $"two edits' grid is {grid.shape[2]} px wide");
        log.WriteLine($"recolour: {first.GetProperty("seconds").GetDouble():F2} s for 2 images, by class {byClass.GetProperty("seconds").GetDouble():F2} s");
    }

    public static IEnumerable<object[]> Refusals()
    {
        byte[] good = FileBytes("bag");
        byte[] text = Encoding.UTF8.GetBytes("#!/bin/sh\necho this is not an image\n");
        yield return new object[] { "no image", new (string, string)[] { ("class", "bag") }, new (string, byte[])[] { }, "image: no image uploaded" };
        yield return new object[] { "no like, no class", new (string, string)[] { ("strength", "0.5") }, new[] { ("image", good) }, "like, class: give like (an image to take the colours from) or class" };
        yield return new object[] { "strength 0", new (string, string)[] { ("class", "bag"), ("strength", "0") }, new[] { ("image", good) }, "strength must be a finite number in [0.001, 1], got 0" };
        yield return new object[] { "strength 1.5", new (string, string)[] { ("strength", "1.5") }, new[] { ("image", good), ("like", good) }, "strength must be a finite number in [0.001, 1], got 1.5" };
        yield return new object[] { "like not an image", new (string, string)[] { }, new[] { ("image", good), ("like", text) }, "like (uploaded image): not a decodable image" };
        yield return new object[] { "image not an image", new (string, string)[] { ("class", "bag") }, new[] { ("image", text) }, "image (uploaded image): not a decodable image" };
        yield return new object[] { "like as text", new (string, string)[] { ("like", "/etc/passwd") }, new[] { ("image", good) }, "like must be an uploaded file" };
        yield return new object[] { "unknown class", new (string, string)[] { ("class", "sneker") }, new[] { ("image", good) }, "class: unknown class 'sneker'" };
        yield return new object[] { "misspelt field", new (string, string)[] { ("strenght", "0.5") }, new[] { ("image", good), ("like", good) }, "unknown field 'strenght' (fields: image, like, class, strength," };
    }

    [Theory]
    [MemberData(nameof(Refusals))]
    public async Task BadRecolorRequestsAreRefusedWithOneLineNamingTheFieldBeforeAnyWork(string name, (string, string)[] fields, (string, byte[])[] files, string expected)
    {
        int completed = (await fx.StatusAsync()).GetProperty("completed").GetInt32();
        using var res = await fx.Http.SendAsync(StudioFixture.Form("/api/recolor", fields, files));
        string text = await res.Content.ReadAsStringAsync();
        Assert.True((int)res.StatusCode == 400, $"{name}: expected 400, got {(int)res.StatusCode}: {text}");
        using var doc = JsonDocument.Parse(text);
        string error = doc.RootElement.GetProperty("error").GetString()!;
        Assert.DoesNotContain('\n', error);
        Assert.StartsWith(expected, error);
        Assert.Equal(completed, (await fx.StatusAsync()).GetProperty("completed").GetInt32());
    }
}
