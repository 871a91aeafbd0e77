using Microsoft.Playwright;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>
/// The studio page in a real browser: Debian's chromium driven by Playwright (its own browser download is not
/// used). The page loads, generates with live progress, shows and offers the images, and an image picked from
/// the result goes through an upload endpoint. The screenshot in the README is this test's
/// (SVGD_UPDATE_SCREENSHOT=1 writes it to docs/studio.png).
/// </summary>
[Collection("studio")]
public class StudioBrowserTests(StudioFixture fx, ITestOutputHelper log)
{
    public const string Chromium = "/usr/bin/chromium";

    /// <summary>Flags that let chromium run headless as root in a container with no GPU, and keep it off the network.</summary>
    public static readonly string[] ChromiumArgs =
    {
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    };

    [Fact]
    public async Task ThePageGeneratesAndShowsTheImagesInARealBrowser()
    {
        // Not a skip: .ci/run installs chromium, so its absence is a broken set-up.
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (.ci/run does this)");
        using var playwright = await Playwright.CreateAsync();
        await using var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ChromiumArgs, Timeout = 60_000 });
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1200, Height = 820 } });
        var problems = new List<string>();
        page.Console += (_, m) => { if (m.Type == "error") problems.Add("console: " + m.Text); };
        page.PageError += (_, e) => problems.Add("page error: " + e);
        string origin = fx.Server.Address.GetLeftPart(UriPartial.Authority);
        var foreign = new List<string>();
        page.Request += (_, r) => { if (!r.Url.StartsWith(origin, StringComparison.Ordinal) && !r.Url.StartsWith("data:", StringComparison.Ordinal)) foreign.Add(r.Url); };

        await page.GotoAsync(fx.Server.Address.ToString());
        await page.Locator("#model-info", new() { HasTextString = "fashion-mnist: 10 classes" }).WaitForAsync();
        Assert.Equal(10, await page.Locator("#class-picker input").CountAsync());

        await page.Locator("#class-picker input[value=sneaker]").CheckAsync();
        await page.Locator("#class-picker input[value=bag]").CheckAsync();
        await page.Locator("#class-picker input[value=trouser]").CheckAsync();
        await page.FillAsync("#form-generate input[name=n]", "6");
        await page.FillAsync("#form-generate input[name=steps]", "10");
        await page.FillAsync("#form-generate input[name=seed]", "3");
        await page.ClickAsync("#generate");
        await page.Locator("#status.done").WaitForAsync(new() { Timeout = 60_000 });
        var grid = page.Locator("#result img.grid");
        Assert.True(await grid.IsVisibleAsync());
        int width = await grid.EvaluateAsync<int>("img => img.naturalWidth");
        int height = await grid.EvaluateAsync<int>("img => img.naturalHeight");
        log.WriteLine($"grid {width}x{height}, status '{await page.Locator("#status").TextContentAsync()}'");
        Assert.Equal(3 * 34 + 2, height);
        Assert.True(width > 6 * 34, $"grid width {width}");
        Assert.Equal(18, await page.Locator("#result .tiles img").CountAsync());
        Assert.StartsWith("data:image/png;base64,", await page.Locator("#result a.download").GetAttributeAsync("href"));
        Assert.Equal(await page.Locator("#progress").EvaluateAsync<double>("p => p.max"), await page.Locator("#progress").EvaluateAsync<double>("p => p.value"));

        // The README's picture of the studio.
        bool update = Environment.GetEnvironmentVariable("SVGD_UPDATE_SCREENSHOT") == "1";
        string shot = update ? Path.Combine(Reference.RepoRoot, "docs", "studio.png") : Path.Combine(Reference.TempDir(), "studio.png");
        Directory.CreateDirectory(Path.GetDirectoryName(shot)!);
        await page.ScreenshotAsync(new() { Path = shot });
        using (var png = Data.ImageFiles.LoadRgb(shot)) Assert.Equal(new long[] { 3, 820, 1200 }, png.shape);
        log.WriteLine($"screenshot: {shot}");

        // Pick a generated image and send it through an upload endpoint.
        await page.Locator("#result .tiles img").Nth(1).ClickAsync();
        await page.ClickAsync("#tabs button[data-tab=reconstruct]");
        await page.ClickAsync("#form-reconstruct .use-picked");
        await page.ClickAsync("#form-reconstruct button.go");
        await page.Locator("#result h2", new() { HasTextString = "reconstruct" }).WaitForAsync(new() { Timeout = 60_000 });
        Assert.Equal(32, await page.Locator("#result img.grid").EvaluateAsync<int>("img => img.naturalWidth"));
        Assert.Equal(2, await page.Locator("#gallery figure").CountAsync());

        // The gallery brings the first result back.
        await page.Locator("#gallery figure img").Last.ClickAsync();
        // The picker lists classes by name, so they come back in that order.
        try { await page.Locator("#result h2", new() { HasTextString = "bag,sneaker,trouser" }).WaitForAsync(new() { Timeout = 10_000 }); }
        catch (TimeoutException) { Assert.Fail("the gallery did not bring the grid back; #result shows: " + await page.Locator("#result h2").TextContentAsync() + "\n" + string.Join("\n", problems)); }
        Assert.Equal(2, await page.Locator("#gallery figure").CountAsync());
        Assert.True(foreign.Count == 0, "requests to other hosts: " + string.Join(", ", foreign));
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}
