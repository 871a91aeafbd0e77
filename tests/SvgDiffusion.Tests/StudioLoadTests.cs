using System.Diagnostics;
using System.Net;
using SvgDiffusion.Data;
using SvgDiffusion.Sampling;
using Xunit;
using Xunit.Abstractions;

namespace SvgDiffusion.Tests;

/// <summary>Many clients at once on loopback: every request is answered, in full, with its own result; latency is reported.</summary>
[Collection("studio")]
public class StudioLoadTests(StudioFixture fx, ITestOutputHelper log)
{
    [Fact]
    public async Task FiftyConcurrentGenerateRequestsAreAllAnswered()
    {
        const int clients = 50, steps = 2;
        // One request first, so the timings below are the server's, not the first call's set-up.
        using (var warm = await fx.Http.SendAsync(StudioFixture.Json("/api/generate", """{"n": 1, "steps": 1}""", "image/png")))
            Assert.Equal(HttpStatusCode.OK, warm.StatusCode);
        var before = await fx.StatusAsync();
        // Fifty clients start together only if the thread pool has threads for them at once; otherwise its slow
        // thread injection would stagger the starts and hide part of the wait from the latencies.
        ThreadPool.GetMinThreads(out int minWorkers, out int minIo);
        ThreadPool.SetMinThreads(Math.Max(minWorkers, 2 * clients), Math.Max(minIo, 2 * clients));
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var requests = Enumerable.Range(0, clients).Select(async i =>
        {
            await go.Task;
            var sw = Stopwatch.StartNew();
            using var res = await fx.Http.SendAsync(StudioFixture.Json("/api/generate",
                $$"""{"classes": [{{i % 10}}], "n": 1, "steps": {{steps}}, "seed": {{i}}}""", "image/png"));
            byte[] body = await res.Content.ReadAsByteArrayAsync();
            return (Index: i, res.StatusCode, Body: body, Seconds: sw.Elapsed.TotalSeconds);
        }).ToArray();
        var wall = Stopwatch.StartNew();
        go.SetResult();
        var results = await Task.WhenAll(requests);
        double total = wall.Elapsed.TotalSeconds;
        ThreadPool.SetMinThreads(minWorkers, minIo);

        Assert.All(results, r => Assert.True(r.StatusCode == HttpStatusCode.OK, $"request {r.Index}: {(int)r.StatusCode} {System.Text.Encoding.UTF8.GetString(r.Body)}"));
        foreach (var r in results)
            using (var png = ImageFiles.DecodeRgb(r.Body, $"reply {r.Index}")) Assert.Equal(36, png.shape[1]);
        // Each client got its own request's result, not a neighbour's: checked against the library for every tenth.
        var s = fx.Model.Service;
        foreach (var r in results.Where(r => r.Index % 10 == 3))
        {
            var plan = s.Plan(new GenerationRequest { Classes = new[] { (r.Index % 10).ToString() }, N = 1, Steps = steps, Seed = r.Index }, new GenerationLimits(64, 200));
            using var g = s.Generate(plan);
            using var grid = g.Grid();
            Assert.Equal(ImageFiles.EncodePng(grid), r.Body);
        }
        var after = await fx.StatusAsync();
        Assert.Equal(before.GetProperty("completed").GetInt32() + clients, after.GetProperty("completed").GetInt32());
        Assert.Equal(before.GetProperty("rejected").GetInt32(), after.GetProperty("rejected").GetInt32());
        Assert.Equal(before.GetProperty("failed").GetInt32(), after.GetProperty("failed").GetInt32());

        var latencies = results.Select(r => r.Seconds).Order().ToArray();
        double Percentile(double p) => latencies[(int)Math.Ceiling(p * latencies.Length) - 1];
        log.WriteLine($"load: {clients} concurrent POST /api/generate (n 1, {steps} Euler steps, CFG 1.5, Accept: image/png) on loopback, " +
                      $"{Environment.ProcessorCount} cores: all {results.Length} answered 200 in {total:F2} s; " +
                      $"latency p50 {Percentile(0.50):F3} s, p95 {Percentile(0.95):F3} s, max {latencies[^1]:F3} s; " +
                      $"{clients / total:F1} requests/s; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
    }
}
