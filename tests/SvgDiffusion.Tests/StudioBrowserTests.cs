using Microsoft.Playwright;
using SvgDiffusion.Sampling;
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
        // Download all: every image of the result as its own PNG, in one click.
        var downloads = new List<string>();
        page.Download += (_, d) => { lock (downloads) downloads.Add(d.SuggestedFilename); };
        await page.ClickAsync("#result button.download-all");
        for (int i = 0; i < 150 && downloads.Count < 18; i++) await Task.Delay(100);
        lock (downloads) Assert.Equal(18, downloads.Distinct().Count());
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
        Assert.Equal("result #1", await page.TextContentAsync("#form-reconstruct .slot .file-name"));
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

    static async Task<(IPlaywright, IBrowser)> LaunchAsync()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: apt-get install chromium (.ci/run does this)");
        var playwright = await Playwright.CreateAsync();
        var browser = await playwright.Chromium.LaunchAsync(new() { ExecutablePath = Chromium, Headless = true, Args = ChromiumArgs, Timeout = 60_000 });
        return (playwright, browser);
    }

    async Task<IPage> OpenAsync(IBrowser browser, int width, int height, List<string> problems)
    {
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = width, Height = height } });
        page.Console += (_, m) => { if (m.Type == "error") problems.Add("console: " + m.Text); };
        page.PageError += (_, e) => problems.Add("page error: " + e);
        await page.GotoAsync(fx.Server.Address.ToString());
        await page.Locator("#model-info", new() { HasTextString = "fashion-mnist: 10 classes" }).WaitForAsync();
        return page;
    }

    /// <summary>A small PNG (a generated image) for the upload slots.</summary>
    async Task<byte[]> SamplePngAsync()
    {
        using var res = await fx.Http.SendAsync(StudioFixture.Json("/api/generate", """{"classes": "sneaker", "n": 1, "steps": 2}""", "image/png"));
        res.EnsureSuccessStatusCode();
        return await res.Content.ReadAsByteArrayAsync();
    }

    string Shot(string name) => Path.Combine(Reference.TempDir(), name);

    /// <summary>Every visible control of the open tab lies inside the control panel; the other tabs and modes are not displayed.</summary>
    static async Task AssertInsidePanelAsync(IPage page, string where)
    {
        string[] outside = await page.EvaluateAsync<string[]>("""
            () => {
              const panel = document.querySelector('#controls').getBoundingClientRect();
              const bad = [];
              for (const el of document.querySelectorAll('#controls input, #controls select, #controls button, #controls label, #controls figure, #controls output, #controls pre')) {
                const r = el.getBoundingClientRect();
                if (r.width === 0 && r.height === 0) continue; // not displayed
                if (r.left < panel.left - 0.5 || r.right > panel.right + 0.5 || r.top < panel.top - 0.5 || r.bottom > panel.bottom + 0.5)
                  bad.push(`${el.tagName.toLowerCase()}${el.name ? '[name=' + el.name + ']' : ''}${el.className ? '.' + el.className : ''} '${(el.textContent || '').trim().slice(0, 30)}' ${Math.round(r.left)}..${Math.round(r.right)} x ${Math.round(r.top)}..${Math.round(r.bottom)} (panel ${Math.round(panel.left)}..${Math.round(panel.right)})`);
                // A control whose own content is wider than its box is clipped (a file input's name, a button's text).
                if ((el.tagName === 'BUTTON' || el.tagName === 'INPUT') && el.type !== 'range' && el.scrollWidth > el.clientWidth + 1 && el.type !== 'number')
                  bad.push(`${el.tagName.toLowerCase()}${el.name ? '[name=' + el.name + ']' : ''}.${el.className} clipped: content ${el.scrollWidth} px in ${el.clientWidth} px`);
              }
              return bad;
            }
            """);
        Assert.True(outside.Length == 0, $"{where}: controls outside their panel:\n" + string.Join("\n", outside));
    }

    [Theory]
    [InlineData(1280, 900)]
    [InlineData(390, 844)]
    public async Task EveryTabFitsItsPanelAndHiddenModesAreNotDisplayed(int width, int height)
    {
        var (playwright, browser) = await LaunchAsync();
        using var _ = playwright;
        await using var __ = browser;
        var problems = new List<string>();
        var page = await OpenAsync(browser, width, height, problems);
        byte[] png = await SamplePngAsync();
        var file = new FilePayload { Name = "a-rather-long-file-name-of-a-sneaker-from-the-test-set.png", MimeType = "image/png", Buffer = png };
        foreach (var tab in new[] { "generate", "vary", "recolor", "mix", "interpolate", "reconstruct" })
        {
            await page.ClickAsync($"#tabs button[data-tab={tab}]");
            foreach (var other in new[] { "generate", "vary", "recolor", "mix", "interpolate", "reconstruct" })
                Assert.Equal(other == tab, await page.Locator($"#form-{other}").IsVisibleAsync());
            foreach (var input in await page.Locator($"#form-{tab} input[type=file]").AllAsync())
                await input.SetInputFilesAsync(file);
            await AssertInsidePanelAsync(page, $"{width}x{height} {tab}");
            await page.ScreenshotAsync(new() { Path = Shot($"studio-{width}-{tab}.png"), FullPage = true });
        }
        // Interpolate's modes: the one not chosen is not displayed (an author display: grid once overrode [hidden]).
        await page.ClickAsync("#tabs button[data-tab=interpolate]");
        await page.CheckAsync("#form-interpolate input[value=seeds]");
        Assert.False(await page.Locator("#form-interpolate .mode-images").IsVisibleAsync());
        Assert.Equal("none", await page.Locator("#form-interpolate .mode-images").EvaluateAsync<string>("e => getComputedStyle(e).display"));
        Assert.True(await page.Locator("#form-interpolate .mode-seeds").IsVisibleAsync());
        await AssertInsidePanelAsync(page, $"{width}x{height} interpolate seeds");
        await page.CheckAsync("#form-interpolate input[value=images]");
        Assert.False(await page.Locator("#form-interpolate .mode-seeds").IsVisibleAsync());
        Assert.True(await page.Locator("#form-interpolate .mode-images").IsVisibleAsync());
        // The copied command is shown inside the panel too.
        await page.ClickAsync("#copy-curl");
        await AssertInsidePanelAsync(page, $"{width}x{height} with a command shown");

        // A one-image result (reconstruct) is shown at a bounded size beside its original; the gallery stays on screen at 1280x900.
        await page.ClickAsync("#tabs button[data-tab=reconstruct]");
        await page.ClickAsync("#form-reconstruct button.go");
        await page.Locator("#result .psnr").WaitForAsync(new() { Timeout = 60_000 });
        var box = (await page.Locator("#result img.grid").BoundingBoxAsync())!;
        Assert.True(box.Width <= 96.5 && box.Height <= 96.5, $"reconstruction shown at {box.Width}x{box.Height}");
        Assert.Equal(2, await page.Locator("#result .compare img").CountAsync());
        var original = (await page.Locator("#result .compare img.input").BoundingBoxAsync())!;
        Assert.True(Math.Abs(original.Width - box.Width) < 0.5 && Math.Abs(original.Y - box.Y) < 0.5, $"original {original.Width} px at y {original.Y}, reconstruction {box.Width} px at y {box.Y}");
        Assert.Equal(new[] { "original", "reconstruction" }, await page.Locator("#result .compare figcaption").AllTextContentsAsync());
        Assert.StartsWith("PSNR ", await page.TextContentAsync("#result .psnr"));
        if (width >= 1000)
        {
            var gallery = (await page.Locator("#gallery .entry").First.BoundingBoxAsync())!;
            Assert.True(gallery.Y + gallery.Height <= height, $"the gallery starts at {gallery.Y}, below the {height} px window");
        }
        await page.ScreenshotAsync(new() { Path = Shot($"studio-{width}-reconstructed.png"), FullPage = true });
        log.WriteLine($"screenshots: {Reference.TempDir()}/studio-{width}-*.png");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public async Task TheRecolourTabRecoloursAnUploadedImageLikeAReference()
    {
        var (playwright, browser) = await LaunchAsync();
        using var _ = playwright;
        await using var __ = browser;
        var problems = new List<string>();
        var page = await OpenAsync(browser, 1280, 900, problems);
        // One bundled model: nothing to pick, so no picker.
        Assert.Equal(Sampling.ModelFolder.BundledNames.Count > 1, await page.Locator("#model-picker").IsVisibleAsync());
        Assert.Equal(Sampling.ModelFolder.BundledNames.ToArray(), await page.Locator("#model-select option").AllTextContentsAsync());

        byte[] source = File.ReadAllBytes(BundledService.ImagePath("sneaker")), like = File.ReadAllBytes(BundledService.ImagePath("bag"));
        await page.ClickAsync("#tabs button[data-tab=recolor]");
        Assert.Equal(GenerationRequest.DefaultRecolorStrength.ToString(System.Globalization.CultureInfo.InvariantCulture), await page.InputValueAsync("#form-recolor input[name=strength]"));
        // Without a reference or a class the page says what is missing, and sends nothing.
        await page.Locator("#form-recolor .slot[data-field=image] input[type=file]").SetInputFilesAsync(new FilePayload { Name = "sneaker.png", MimeType = "image/png", Buffer = source });
        await page.ClickAsync("#form-recolor button.go");
        Assert.Equal("give a reference image (\"colours like\") or pick a class", await page.TextContentAsync("#status"));

        await page.Locator("#form-recolor .slot[data-field=like] input[type=file]").SetInputFilesAsync(new FilePayload { Name = "bag.png", MimeType = "image/png", Buffer = like });
        await page.FillAsync("#form-recolor input[name=steps]", "3");
        await page.FillAsync("#form-recolor input[name=seed]", "6");
        await page.ClickAsync("#form-recolor button.go");
        await page.Locator("#status.done").WaitForAsync(new() { Timeout = 60_000 });
        await page.Locator("#result h2", new() { HasTextString = "recolor" }).WaitForAsync();
        // Source | reference | edit, the edit at the model's size.
        Assert.Equal(new[] { "source", "colours like", "edit" }, await page.Locator("#result .compare figcaption").AllTextContentsAsync());
        var edit = page.Locator("#result img.grid");
        Assert.Equal(32, await edit.EvaluateAsync<int>("img => img.naturalWidth"));
        Assert.Equal(32, await edit.EvaluateAsync<int>("img => img.naturalHeight"));

        // The page's request is the API's: the image is the library's recolouring at the page's settings.
        string src = (await edit.GetAttributeAsync("src"))!;
        Assert.StartsWith("data:image/png;base64,", src);
        var s = fx.Model.Service;
        using var ts = Data.ImageFiles.DecodeRgb(source, "source");
        using var tl = Data.ImageFiles.DecodeRgb(like, "like");
        var plan = s.Plan(new Sampling.GenerationRequest { N = 1, Steps = 3, Seed = 6 }, new Sampling.GenerationLimits(8, 8), unconditionalByDefault: true, classesField: "class");
        using (var r = s.Recolor(ts, tl, GenerationRequest.DefaultRecolorStrength, plan))
            Assert.Equal(Data.ImageFiles.EncodePng(r.Images![0]), Convert.FromBase64String(src["data:image/png;base64,".Length..]));
        await page.ScreenshotAsync(new() { Path = Shot("studio-recolor.png"), FullPage = true });

        // The edit goes back in as the next source.
        await edit.ClickAsync();
        await page.ClickAsync("#result .actions button.send[data-tab=recolor][data-field=image]");
        Assert.True(await page.Locator("#form-recolor .slot[data-field=image] img").IsVisibleAsync());
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public async Task TheModelPickerSwitchesToABundledModelAndRedrawsThePage()
    {
        // A server started from a file (svgd serve --model my-model.safetensors): the picker offers the bundled models.
        await using var server = await Server.StudioServer.StartAsync(fx.Model.Service, fx.Options with { ModelName = "my-model.safetensors", ModelIsBundled = false });
        var (playwright, browser) = await LaunchAsync();
        using var _ = playwright;
        await using var __ = browser;
        var problems = new List<string>();
        var page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1280, Height = 900 } });
        page.Console += (_, m) => { if (m.Type == "error") problems.Add("console: " + m.Text); };
        page.PageError += (_, e) => problems.Add("page error: " + e);
        await page.GotoAsync(server.Address.ToString());
        await page.Locator("#model-info", new() { HasTextString = "my-model.safetensors: 10 classes" }).WaitForAsync();
        Assert.True(await page.Locator("#model-picker").IsVisibleAsync());
        Assert.Equal(new[] { "my-model.safetensors" }.Concat(Sampling.ModelFolder.BundledNames).ToArray(), await page.Locator("#model-select option").AllTextContentsAsync());
        Assert.Equal(new[] { true }.Concat(Sampling.ModelFolder.BundledNames.Select(_ => false)).ToArray(), await page.Locator("#model-select option").EvaluateAllAsync<bool[]>("os => os.map(o => o.disabled)"));
        Assert.Equal("my-model.safetensors", await page.InputValueAsync("#model-select"));

        await page.SelectOptionAsync("#model-select", "fashion-mnist");
        await page.Locator("#status", new() { HasTextString = "now serving fashion-mnist" }).WaitForAsync(new() { Timeout = 60_000 });
        Assert.StartsWith("fashion-mnist: 10 classes", await page.TextContentAsync("#model-info"));
        using (var doc = System.Text.Json.JsonDocument.Parse(await new HttpClient { BaseAddress = server.Address }.GetStringAsync("/api/models")))
            Assert.Equal("fashion-mnist", doc.RootElement.GetProperty("current").GetString());
        // Redrawn, not added to: one chip and one option per class.
        Assert.Equal(10, await page.Locator("#class-picker input").CountAsync());
        Assert.Equal(11, await page.Locator("#form-vary select[name=class] option").CountAsync());
        // The file model cannot be chosen again: with one bundled model there is nothing left to pick.
        Assert.Equal(Sampling.ModelFolder.BundledNames.Count > 1, await page.Locator("#model-picker").IsVisibleAsync());

        // The page still works on the switched model.
        await page.ClickAsync("#generate");
        await page.Locator("#status.done").WaitForAsync(new() { Timeout = 60_000 });
        Assert.True(await page.Locator("#result img.grid").IsVisibleAsync());
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public async Task ResultsAreBoundedAndTheFeaturesWork()
    {
        var (playwright, browser) = await LaunchAsync();
        using var _ = playwright;
        await using var __ = browser;
        var problems = new List<string>();
        var page = await OpenAsync(browser, 1280, 900, problems);
        using (var doc = System.Text.Json.JsonDocument.Parse(await fx.Http.GetStringAsync("/api/model")))
        {
            // The page's defaults are the server's, and the CLI's default run (all classes, 8 each) fits the default limit.
            var m = doc.RootElement;
            Assert.Equal(m.GetProperty("defaults").GetProperty("n").GetInt32().ToString(), await page.InputValueAsync("#form-generate input[name=n]"));
            Assert.True(m.GetProperty("limits").GetProperty("n").GetInt32() >= 10 * m.GetProperty("defaults").GetProperty("n").GetInt32());
        }
        // The count says what it does.
        Assert.Contains("random classes", await page.TextContentAsync("#classes-hint"));
        Assert.Equal("images (random classes)", await page.TextContentAsync("#n-label"));
        await page.ClickAsync("#classes-all");
        Assert.Equal("per class", await page.TextContentAsync("#n-label"));
        Assert.Contains("10 classes picked: one row of 8 per class", await page.TextContentAsync("#classes-hint"));
        // Never more than the server's limit: 80 / 10 classes.
        await page.FillAsync("#form-generate input[name=n]", "50");
        Assert.Equal("8", await page.InputValueAsync("#form-generate input[name=n]"));

        // A refusal over the limit, as the page words it: no CLI options, no API paths.
        using (var refused = await fx.Http.SendAsync(StudioFixture.Json("/api/generate", """{"classes": [0,1,2,3,4,5,6,7,8,9], "n": 9}""")))
        {
            Assert.Equal(400, (int)refused.StatusCode);
            string error = System.Text.Json.JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetString()!;
            Assert.Contains("--max-n", error);
            string worded = await page.EvaluateAsync<string>("m => pageMessage(m)", error);
            Assert.EndsWith("this server makes at most 80 images per request: ask for fewer", worded);
            Assert.DoesNotContain("/api/", worded);
            Assert.DoesNotContain("--max", worded);
        }

        // Copy as CLI / curl: the request as text.
        await page.FillAsync("#form-generate input[name=steps]", "2");
        await page.ClickAsync("#copy-cli");
        string cli = (await page.TextContentAsync("#command"))!;
        Assert.StartsWith("./svgd sample --classes ", cli);
        Assert.Contains("--n 8 --steps 2", cli);
        Assert.Contains("--out grid.png", cli);
        await page.ClickAsync("#copy-curl");
        string curl = (await page.TextContentAsync("#command"))!;
        Assert.StartsWith($"curl -s {fx.Server.Address.GetLeftPart(UriPartial.Authority)}/api/generate", curl);
        Assert.Contains("\"n\":8,\"steps\":2", curl);

        // All classes at the default: 80 images, shown at a bounded size.
        await page.ClickAsync("#generate");
        await page.Locator("#status.done").WaitForAsync(new() { Timeout = 120_000 });
        Assert.Equal(80, await page.Locator("#result .tiles img").CountAsync());
        await AssertBoundedAsync(page);
        await page.ScreenshotAsync(new() { Path = Shot("studio-1280-all-classes.png") });

        // ETA: from the measured rate.
        Assert.Equal("working: 50 % · about 5 s left", await page.EvaluateAsync<string>("() => progressText(5, 10, { start: performance.now() - 5000, from: 0, done: 0 })"));

        // Send to vary; a 2x2 variation grid is bounded like the rest.
        Assert.False(await page.Locator("#result .tiles img").First.IsVisibleAsync()); // 80 tiles are folded away
        var gallery = (await page.Locator("#gallery .entry").First.BoundingBoxAsync())!;
        Assert.True(gallery.Y < 900 * 1.5, $"the gallery starts at {gallery.Y}");
        await page.ClickAsync("#result .tiles-fold summary");
        await page.Locator("#result .tiles img").Nth(7).ClickAsync();
        await page.ClickAsync("#result .actions button.send[data-tab=vary]");
        Assert.True(await page.Locator("#form-vary").IsVisibleAsync());
        Assert.True(await page.Locator("#form-vary .slot img").IsVisibleAsync());
        await page.FillAsync("#form-vary input[name=steps]", "2");
        await page.ClickAsync("#form-vary button.go");
        await page.Locator("#result h2", new() { HasTextString = "vary" }).WaitForAsync(new() { Timeout = 60_000 });
        await AssertBoundedAsync(page);
        // Small results are shown at 3x, the same scale as the rest.
        Assert.Equal(3 * await page.Locator("#result img.grid").EvaluateAsync<int>("img => img.naturalWidth"), (int)Math.Round((await page.Locator("#result img.grid").BoundingBoxAsync())!.Width));

        // Zoom: bounded by the window.
        await page.Locator("#result .tiles img").First.DblClickAsync();
        Assert.True(await page.Locator("#zoom").IsVisibleAsync());
        var z = (await page.Locator("#zoom img").BoundingBoxAsync())!;
        Assert.True(z.Width >= 200 && z.Width <= 1280 && z.Height <= 900, $"zoomed to {z.Width}x{z.Height}");
        await page.ScreenshotAsync(new() { Path = Shot("studio-1280-zoom.png") });
        await page.Locator("#zoom").ClickAsync();
        Assert.False(await page.Locator("#zoom").IsVisibleAsync());

        // Drop and paste onto the mix slots (a DataTransfer as the browser makes one), then mix: semantic | detail | mix.
        await page.ClickAsync("#tabs button[data-tab=mix]");
        byte[] png = await SamplePngAsync();
        await page.EvaluateAsync("""
            async (b64) => {
              const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
              const dt = new DataTransfer();
              dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
              document.querySelector('#form-mix .slot[data-field=semantic]').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
              const pasted = new DataTransfer();
              pasted.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
              document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: pasted, bubbles: true, cancelable: true }));
            }
            """, Convert.ToBase64String(png));
        await page.Locator("#form-mix .slot[data-field=semantic] img").WaitForAsync();
        await page.Locator("#form-mix .slot[data-field=detail] img").WaitForAsync();
        // Each filled slot names its image; the native file input (and its "No file chosen") is not shown.
        Assert.Equal("dropped: dropped.png", await page.TextContentAsync("#form-mix .slot[data-field=semantic] .file-name"));
        Assert.Equal("pasted image", await page.TextContentAsync("#form-mix .slot[data-field=detail] .file-name"));
        foreach (var input in await page.Locator("#form-mix input[type=file]").AllAsync())
            Assert.False(await input.IsVisibleAsync(), "a native file input (\"No file chosen\") is shown next to a filled slot");
        await page.ClickAsync("#form-mix button.go");
        await page.Locator("#result h2", new() { HasTextString = "mix" }).WaitForAsync(new() { Timeout = 60_000 });
        Assert.Equal(new[] { "semantic from", "detail from", "mix" }, await page.Locator("#result .compare figcaption").AllTextContentsAsync());
        Assert.Equal("download PNG", await page.TextContentAsync("#result a.download"));
        await AssertBoundedAsync(page);
        await page.ScreenshotAsync(new() { Path = Shot("studio-1280-mix.png") });

        // The gallery survives a reload (localStorage).
        int entries = await page.Locator("#gallery .entry").CountAsync();
        Assert.Equal(3, entries);
        await page.ReloadAsync();
        await page.Locator("#model-info", new() { HasTextString = "fashion-mnist" }).WaitForAsync();
        Assert.Equal(entries, await page.Locator("#gallery .entry").CountAsync());
        // The restored mix shows its inputs beside the result, as before the reload.
        await page.Locator("#gallery .entry img").First.ClickAsync();
        await page.Locator("#result h2", new() { HasTextString = "mix" }).WaitForAsync();
        Assert.Equal(new[] { "semantic from", "detail from", "mix" }, await page.Locator("#result .compare figcaption").AllTextContentsAsync());
        Assert.Equal(2, await page.Locator("#result .compare img.input").CountAsync());
        foreach (var img in await page.Locator("#result .compare img.input").AllAsync())
            Assert.True(await img.EvaluateAsync<bool>("i => i.src.startsWith('data:image/') && i.complete && i.naturalWidth > 0"), "a restored input image did not load");
        await page.Locator("#gallery .entry img").Last.ClickAsync();
        Assert.Equal(80, await page.Locator("#result .tiles img").CountAsync());
        log.WriteLine($"screenshots: {Reference.TempDir()}/studio-1280-*.png");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    /// <summary>The result image: at most 3x its pixels, inside the result panel, and no taller than 520 px.</summary>
    static async Task AssertBoundedAsync(IPage page)
    {
        var grid = page.Locator("#result img.grid");
        await grid.EvaluateAsync("img => img.decode()");
        int natural = await grid.EvaluateAsync<int>("img => img.naturalWidth");
        var box = (await grid.BoundingBoxAsync())!;
        var panel = (await page.Locator("#result").BoundingBoxAsync())!;
        Assert.True(box.Width <= 3 * natural + 0.5, $"shown {box.Width} px wide for {natural} px");
        Assert.True(box.Height <= 520.5, $"shown {box.Height} px tall");
        Assert.True(box.X >= panel.X && box.X + box.Width <= panel.X + panel.Width + 0.5, "the result is wider than its panel");
    }
}
