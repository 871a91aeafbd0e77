using System.Text.Json;
using SvgDiffusion.Sampling;
using SvgDiffusion.Server;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// GET /api/models and POST /api/model: the bundled models by name (never a path), a switch queued like any
/// work, refused with the known names for anything else, and GET /api/model describing the model served now.
/// </summary>
[Collection("studio")]
public class StudioModelSwitchTests(StudioFixture fx)
{
    static async Task<JsonElement> JsonOf(HttpResponseMessage r)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True(r.IsSuccessStatusCode, $"{(int)r.StatusCode}: {body}");
        using var doc = JsonDocument.Parse(body);
        return doc.RootElement.Clone();
    }

    static async Task<string> ErrorOf(HttpResponseMessage r, int status)
    {
        string body = await r.Content.ReadAsStringAsync();
        Assert.True((int)r.StatusCode == status, $"expected {status}, got {(int)r.StatusCode}: {body}");
        using var doc = JsonDocument.Parse(body);
        string error = doc.RootElement.GetProperty("error").GetString()!;
        Assert.DoesNotContain('\n', error);
        return error;
    }

    [Fact]
    public async Task ModelsListsTheBundledOnesAndSwitchingToTheServedOneKeepsIt()
    {
        var list = await JsonOf(await fx.Http.GetAsync("/api/models"));
        Assert.Equal("fashion-mnist", list.GetProperty("current").GetString());
        var bundled = list.GetProperty("bundled").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Equal(ModelFolder.BundledNames, bundled);
        Assert.Contains("fashion-mnist", bundled);

        int completed = (await fx.StatusAsync()).GetProperty("completed").GetInt32();
        var info = await JsonOf(await fx.Http.SendAsync(StudioFixture.Json("/api/model", """{"name": "fashion-mnist"}""")));
        Assert.Equal("fashion-mnist", info.GetProperty("name").GetString());
        Assert.Equal(10, info.GetProperty("classes").GetArrayLength());
        // Through the work queue: it counts as a completed request.
        Assert.Equal(completed + 1, (await fx.StatusAsync()).GetProperty("completed").GetInt32());

        string known = string.Join(", ", ModelFolder.BundledNames);
        Assert.Equal($"name: no bundled model 'nope' (bundled: {known})", await ErrorOf(await fx.Http.SendAsync(StudioFixture.Json("/api/model", """{"name": "nope"}""")), 400));
        Assert.Equal($"name: no bundled model '{ModelFolder.BundledRoot}/fashion-mnist' (bundled: {known})",
            await ErrorOf(await fx.Http.SendAsync(StudioFixture.Json("/api/model", JsonSerializer.Serialize(new { name = ModelFolder.BundledRoot + "/fashion-mnist" }))), 400));
        Assert.Equal($"name: give a bundled model's name ({known})", await ErrorOf(await fx.Http.SendAsync(StudioFixture.Json("/api/model", "{}")), 400));
        Assert.StartsWith("unknown field 'model' (fields: name)", await ErrorOf(await fx.Http.SendAsync(StudioFixture.Json("/api/model", """{"model": "fashion-mnist"}""")), 400));
        Assert.Equal(completed + 1, (await fx.StatusAsync()).GetProperty("completed").GetInt32());
        using var doc = JsonDocument.Parse(await fx.Http.GetStringAsync("/api/model"));
        Assert.Equal("fashion-mnist", doc.RootElement.GetProperty("name").GetString());
    }

    [Fact]
    public async Task AServerStartedFromAFileSwitchesToTheBundledModelAndStillListsIt()
    {
        // As `svgd serve --model some/file.safetensors`: the served model is not the bundled one, whatever its weights.
        var options = fx.Options with { ModelName = "my-model.safetensors", ModelIsBundled = false };
        await using var server = await StudioServer.StartAsync(fx.Model.Service, options);
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
        const string request = """{"classes": "bag", "n": 2, "steps": 3, "seed": 4}""";

        var list = await JsonOf(await http.GetAsync("/api/models"));
        Assert.Equal("my-model.safetensors", list.GetProperty("current").GetString());
        Assert.Equal(ModelFolder.BundledNames, list.GetProperty("bundled").EnumerateArray().Select(e => e.GetString()!).ToList());
        var before = await JsonOf(await http.SendAsync(StudioFixture.Json("/api/generate", request)));
        Assert.Equal("my-model.safetensors", before.GetProperty("settings").GetProperty("model").GetString());

        var info = await JsonOf(await http.SendAsync(StudioFixture.Json("/api/model", """{"name": "fashion-mnist"}""")));
        Assert.Equal("fashion-mnist", info.GetProperty("name").GetString());
        Assert.Equal("fp32", info.GetProperty("precision").GetString());
        list = await JsonOf(await http.GetAsync("/api/models"));
        Assert.Equal("fashion-mnist", list.GetProperty("current").GetString());

        // The bundled model loaded from its folder makes what the same weights made before the switch.
        var after = await JsonOf(await http.SendAsync(StudioFixture.Json("/api/generate", request)));
        Assert.Equal("fashion-mnist", after.GetProperty("settings").GetProperty("model").GetString());
        for (int i = 0; i < 2; i++)
            Assert.Equal(before.GetProperty("images")[i].GetProperty("png").GetString(), after.GetProperty("images")[i].GetProperty("png").GetString());

        // The model the server was started with is its caller's: switching away left it usable.
        var plan = fx.Model.Service.Plan(new GenerationRequest { N = 1, Steps = 1 }, new GenerationLimits(4, 4));
        using (var r = fx.Model.Service.Generate(plan)) Assert.Equal(1, r.Images!.shape[0]);
    }

    [Fact]
    public async Task ARequestReadForTheModelSwitchedAwayFromIsRefused409WhenItsTurnComes()
    {
        var options = fx.Options with { ModelName = "my-model.safetensors", ModelIsBundled = false };
        await using var server = await StudioServer.StartAsync(fx.Model.Service, options);
        using var http = new HttpClient { BaseAddress = server.Address, Timeout = TimeSpan.FromMinutes(2) };
        async Task<JsonElement> Status()
        {
            using var doc = JsonDocument.Parse(await http.GetStringAsync("/api/status"));
            return doc.RootElement.Clone();
        }
        async Task Until(Func<JsonElement, bool> ok, string what)
        {
            var deadline = DateTime.UtcNow.AddSeconds(60);
            while (!ok(await Status()))
            {
                Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
                await Task.Delay(20);
            }
        }

        // A long request holds the worker while a switch, then a request read for the current model, queue behind it.
        using var stopLong = new CancellationTokenSource();
        var longRun = http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 64, "steps": 200}"""), stopLong.Token);
        await Until(s => s.GetProperty("running").GetBoolean(), "the long request to run");
        var switching = http.SendAsync(StudioFixture.Json("/api/model", """{"name": "fashion-mnist"}"""));
        await Until(s => s.GetProperty("waiting").GetInt32() == 1, "the switch to queue");
        var stale = http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}"""));
        await Until(s => s.GetProperty("waiting").GetInt32() == 2, "the second request to queue");
        stopLong.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => longRun);

        var info = await JsonOf(await switching);
        Assert.Equal("fashion-mnist", info.GetProperty("name").GetString());
        Assert.Equal("the studio switched from model 'my-model.safetensors' to 'fashion-mnist' while this request waited; send it again", await ErrorOf(await stale, 409));
        // Sent again, it runs on the new model.
        var again = await JsonOf(await http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}""")));
        Assert.Equal("fashion-mnist", again.GetProperty("settings").GetProperty("model").GetString());
    }
}
