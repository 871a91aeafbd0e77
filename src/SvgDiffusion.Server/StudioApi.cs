using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using SvgDiffusion.Sampling;

namespace SvgDiffusion.Server;

/// <summary>The endpoints. Field names are the CLI's option names; every refusal is one line of JSON.</summary>
internal sealed class StudioApi(GenerationService initialModel, StudioOptions options) : IDisposable
{
    public WorkQueue Queue { get; } = new(options.QueueCapacity);
    readonly StudioModels _models = new(initialModel, options.ModelName, options.ModelIsBundled);
    GenerationLimits Limits => new(options.MaxSamples, options.MaxSteps,
        " (this server's limit per request: ask for fewer; svgd serve --max-n raises it; GET /api/model lists the limits)",
        " (this server's limit: svgd serve --max-steps raises it)");

    static readonly string[] SamplingFields = { "n", "steps", "cfg", "guidance", "sampler", "shift", "seed", "precision" };

    /// <summary>The methods each API path takes (its GET also answers HEAD), for the 405 answer's Allow header.</summary>
    readonly Dictionary<string, string[]> _methods = new(StringComparer.OrdinalIgnoreCase);

    public void Map(WebApplication app)
    {
        app.Use(async (ctx, next) =>
        {
            var sw = Stopwatch.StartNew();
            try { await next(); }
            // Whatever escaped an endpoint: a client's mistake keeps its 4xx, anything else is a 500 with its stack logged.
            catch (Exception e) when (!ctx.Response.HasStarted && !ctx.RequestAborted.IsCancellationRequested)
            {
                await Refuse(ctx, e);
            }
            if (options.Log != null && ctx.Request.Path.StartsWithSegments("/api"))
                options.Log($"{ctx.Request.Method} {ctx.Request.Path} {(ctx.RequestAborted.IsCancellationRequested ? "client gone" : ctx.Response.StatusCode.ToString())} {sw.Elapsed.TotalSeconds:F2} s");
        });
        app.MapMethods("/", GetAndHead, async ctx => await EmbeddedAssets.TrySendAsync(ctx, "index.html"));
        app.MapMethods("/{file}", GetAndHead, async ctx =>
        {
            if (!await EmbeddedAssets.TrySendAsync(ctx, (string)ctx.Request.RouteValues["file"]!)) ctx.Response.StatusCode = 404;
        });
        Api(app, "/api/model", HttpMethods.Get, ctx => Json(ctx, 200, Model(_models.Current)));
        Api(app, "/api/model", HttpMethods.Post, SwitchModel);
        Api(app, "/api/models", HttpMethods.Get, ctx => Json(ctx, 200, Models()));
        Api(app, "/api/status", HttpMethods.Get, ctx => Json(ctx, 200, Status()));
        Api(app, "/api/generate", HttpMethods.Post, ctx => Handle(ctx, Generate));
        Api(app, "/api/vary", HttpMethods.Post, ctx => Handle(ctx, Vary));
        Api(app, "/api/recolor", HttpMethods.Post, ctx => Handle(ctx, Recolor));
        Api(app, "/api/interpolate", HttpMethods.Post, ctx => Handle(ctx, Interpolate));
        Api(app, "/api/mix", HttpMethods.Post, ctx => Handle(ctx, Mix));
        Api(app, "/api/reconstruct", HttpMethods.Post, ctx => Handle(ctx, Reconstruct));
        app.Map("/api/{**rest}", NoEndpoint);
    }

    static readonly string[] GetAndHead = { HttpMethods.Get, HttpMethods.Head };

    void Api(WebApplication app, string path, string method, RequestDelegate handler)
    {
        string[] methods = method == HttpMethods.Get ? GetAndHead : new[] { method };
        app.MapMethods(path, methods, handler);
        _methods[path] = _methods.TryGetValue(path, out var earlier) ? earlier.Concat(methods).ToArray() : methods;
    }

    /// <summary>An API path that exists but not for this method: 405 with the methods it takes; otherwise 404.</summary>
    Task NoEndpoint(HttpContext ctx)
    {
        string path = ctx.Request.Path.Value ?? "";
        if (_methods.TryGetValue(path.TrimEnd('/'), out var allowed))
        {
            ctx.Response.Headers.Allow = string.Join(", ", allowed);
            return Json(ctx, 405, Error($"{ctx.Request.Method} is not allowed on {path.TrimEnd('/')} (it takes {string.Join(" or ", allowed)})"));
        }
        return Json(ctx, 404, Error($"no endpoint {ctx.Request.Method} {ctx.Request.Path} (see GET /api/model and the README)"));
    }

    /// <summary>Answers an exception as JSON: its status and one line; a 5xx that is not the server stopping is logged with its stack.</summary>
    Task Refuse(HttpContext ctx, Exception e)
    {
        var (status, message) = Describe(e);
        if (status == 500) LogFailure(ctx, e);
        return Json(ctx, status, Error(message));
    }

    /// <summary>A server error, for whoever runs the server: the request, then the exception with its stack.</summary>
    void LogFailure(HttpContext ctx, Exception e) =>
        options.Log?.Invoke($"{ctx.Request.Method} {ctx.Request.Path} failed: {e}");

    JsonObject Model(StudioModel model)
    {
        var service = model.Service;
        var editor = model.Editor;
        var m = service.Model.Config;
        var ae = ((Models.Autoencoder.SvgAutoencoder)editor.Autoencoder).Config;
        return new JsonObject
        {
            ["name"] = model.Name,
            ["classes"] = new JsonArray(Enumerable.Range(0, service.Classes.NumClasses).Select(i => (JsonNode)service.Classes.Name(i)).ToArray()),
            ["class_names"] = service.Classes.Names != null,
            ["image_size"] = editor.ImageSize,
            ["latent"] = new JsonObject
            {
                ["channels"] = ae.LatentChannels, ["semantic"] = ae.SemanticDim, ["residual"] = ae.ResidualVit.OutputDim,
                ["grid"] = m.InputSize, ["frozen_encoder"] = ae.FrozenEncoder,
            },
            ["dit"] = new JsonObject { ["depth"] = m.Depth, ["hidden_size"] = m.HiddenSize, ["heads"] = m.NumHeads },
            ["precision"] = Runtime.Precision.Name(service.Precision),
            ["defaults"] = new JsonObject
            {
                ["n"] = GenerationRequest.DefaultN, ["steps"] = GenerationRequest.DefaultSteps, ["cfg"] = GenerationRequest.DefaultCfg,
                ["guidance"] = "constant", ["sampler"] = "euler", ["shift"] = Transport.Sampler.DefaultShift, ["seed"] = 0,
                ["strength"] = DefaultStrength, ["recolor_strength"] = GenerationRequest.DefaultRecolorStrength, ["frames"] = DefaultFrames,
            },
            ["samplers"] = new JsonArray(GenerationRequest.Samplers.Select(s => (JsonNode)s).ToArray()),
            ["guidance_modes"] = new JsonArray("constant", "late", "linear", "early-<t>", "cfg_star-<k>-<r>"),
            ["limits"] = new JsonObject
            {
                ["n"] = options.MaxSamples, ["steps"] = options.MaxSteps, ["frames"] = options.MaxFrames,
                ["upload_bytes"] = options.MaxUploadBytes, ["upload_pixels"] = options.MaxUploadPixels, ["queue"] = options.QueueCapacity,
            },
        };
    }

    /// <summary>The bundled models a client may switch to (POST /api/model {"name": ...}) and the one served now.</summary>
    JsonObject Models() => new()
    {
        ["current"] = _models.Current.Name,
        ["bundled"] = new JsonArray(StudioModels.Bundled.Select(n => (JsonNode)n).ToArray()),
    };

    /// <summary>
    /// POST /api/model {"name": N}: serve the bundled model N from now on. Queued like any work, so it waits for the
    /// requests ahead of it; answered with the new model's GET /api/model.
    /// </summary>
    async Task SwitchModel(HttpContext ctx)
    {
        var abort = ctx.RequestAborted;
        try
        {
            var fields = await ApiFields.ReadAsync(ctx.Request, abort);
            fields.Allow("name");
            string name = StudioModels.RequireBundled(fields.String("name"));
            var item = Queue.TryEnqueue(_ => Model(_models.Switch(name)), abort);
            if (item == null)
            {
                await Busy(ctx);
                return;
            }
            await Json(ctx, 200, (JsonObject)await item.Completion.Task.WaitAsync(abort));
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested) { /* the client went away: nobody to answer */ }
        catch (Exception e) when (!ctx.Response.HasStarted && !abort.IsCancellationRequested)
        {
            await Refuse(ctx, e);
        }
    }

    Task Busy(HttpContext ctx)
    {
        int wait = Queue.RetryAfterSeconds;
        ctx.Response.Headers.RetryAfter = wait.ToString();
        return Json(ctx, 429, Error($"busy: {Queue.Waiting} requests are waiting (the queue holds {Queue.Capacity}); retry after {wait} s"));
    }

    JsonObject Status() => new()
    {
        ["waiting"] = Queue.Waiting, ["running"] = Queue.Busy, ["capacity"] = Queue.Capacity,
        ["completed"] = Queue.Completed, ["cancelled"] = Queue.Cancelled, ["failed"] = Queue.Failed, ["rejected"] = Queue.Rejected,
    };

    const double DefaultStrength = GenerationRequest.DefaultStrength;
    const int DefaultFrames = 8, DefaultVariations = 4;

    /// <summary>A parsed request: the work to queue, and the inputs it owns (decoded uploads).</summary>
    sealed record Prepared(Func<WorkItem, ApiResult> Work, IDisposable? Inputs = null);

    Prepared Generate(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        f.Allow(SamplingFields.Prepend("labels").Prepend("classes").ToArray());
        var plan = service.Plan(f.GenerationRequest(), Limits);
        return new Prepared(item =>
        {
            using var r = service.Generate(plan, decode: true, progress: item.Report, cancel: item.Token);
            return FromGeneration(m, r, Settings(m, plan));
        });
    }

    Prepared Vary(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        f.Allow(SamplingFields.Prepend("strength").Prepend("class").Prepend("image").ToArray());
        double strength = f.Double("strength") ?? DefaultStrength;
        GenerationRequest.ValidateStrength(strength);
        var plan = service.Plan(f.GenerationRequest("class", DefaultVariations), Limits, unconditionalByDefault: true, classesField: "class");
        var image = Upload(f, m, "image");
        return new Prepared(item =>
        {
            using var r = service.Vary(image, strength, plan, item.Report, item.Token);
            var settings = Settings(m, plan);
            settings["strength"] = strength;
            return FromGeneration(m, r, settings);
        }, image);
    }

    /// <summary>
    /// SVG's own edit, as <c>svgd recolor</c>: the image's semantic channels kept, its residual (colour) channels
    /// regenerated from like's (an uploaded reference) or drawn afresh for a class.
    /// </summary>
    Prepared Recolor(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        f.Allow(SamplingFields.Prepend("strength").Prepend("class").Prepend("like").Prepend("image").ToArray());
        if (!m.Editor.Autoencoder.Config.HasResidual)
            throw new ApiException(409, $"model '{m.Name}': recolouring needs residual channels, and this model's autoencoder has frozen features only");
        bool hasLike = f.File("like") != null;
        if (!hasLike && f.List("class") is not { Count: > 0 })
            throw new ApiException(400, "like, class: give like (an image to take the colours from) or class (new colours of a class), or both");
        double strength = f.Double("strength") ?? GenerationRequest.DefaultRecolorStrength;
        GenerationRequest.ValidateStrength(strength);
        var plan = service.Plan(f.GenerationRequest("class", 1), Limits, unconditionalByDefault: true, classesField: "class");
        var image = Upload(f, m, "image");
        var like = hasLike ? Upload(f, m, "like", image) : null;
        return new Prepared(item =>
        {
            using var r = service.Recolor(image, like, strength, plan, item.Report, item.Token);
            var settings = Settings(m, plan);
            settings["strength"] = strength;
            settings["like"] = like is not null;
            settings["start_time"] = Math.Round(GenerationService.StartTime(strength, plan.Sampler.TimestepShift), 4);
            // As svgd recolor's --out: one edit is the image itself, more are a grid.
            return FromGeneration(m, r, settings, alone: plan.Count == 1);
        }, like is null ? image : new Disposables(image, like));
    }

    Prepared Interpolate(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        int frames = f.Int("frames") ?? DefaultFrames;
        if (frames < 2 || frames > options.MaxFrames) throw new ApiException(400, $"frames must be a whole number in 2..{options.MaxFrames}, got {frames}");
        if (f.Has("a") || f.Has("b"))
        {
            f.Allow("a", "b", "frames", "precision");
            CheckPrecision(f, service);
            var a = Upload(f, m, "a");
            var b = Upload(f, m, "b", a);
            var inputs = new Disposables(a, b);
            return new Prepared(item =>
            {
                item.Token.ThrowIfCancellationRequested();
                var sw = Stopwatch.StartNew();
                using var scope = TorchSharp.torch.NewDisposeScope();
                var strip = m.Editor.Interpolate(a, b, frames);
                return FromImages(strip, Data.ImageFiles.Grid(strip, frames), new JsonObject { ["frames"] = frames, ["path"] = "linear on the latents of a and b" }, sw);
            }, inputs);
        }
        f.Allow(SamplingFields.Where(x => x != "n" && x != "seed").Append("seeds").Append("class").Append("frames").ToArray());
        var seeds = f.List("seeds") ?? throw new ApiException(400, "give two images (a, b) or two seeds (seeds: [A, B])");
        if (seeds.Count != 2 || !long.TryParse(seeds[0], out long sa) || !long.TryParse(seeds[1], out long sb))
            throw new ApiException(400, $"seeds must be two whole numbers, got [{string.Join(", ", seeds)}]");
        var plan = service.Plan(f.GenerationRequest("class", 1), Limits, unconditionalByDefault: true, classesField: "class");
        if (plan.Rows > 1) throw new ApiException(400, $"class: an interpolation between two seeds samples one class, got {plan.Rows}");
        return new Prepared(item =>
        {
            using var r = service.InterpolateSeeds(sa, sb, frames, plan, item.Report, item.Token);
            var settings = Settings(m, plan);
            settings.Remove("n");
            settings.Remove("seed");
            settings["seeds"] = new JsonArray(sa, sb);
            settings["frames"] = frames;
            settings["path"] = "spherical on the noise of the two seeds";
            return FromGeneration(m, r, settings);
        });
    }

    Prepared Mix(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        f.Allow("semantic", "detail", "precision");
        CheckPrecision(f, service);
        var a = Upload(f, m, "semantic");
        var b = Upload(f, m, "detail", a);
        return new Prepared(item =>
        {
            item.Token.ThrowIfCancellationRequested();
            var sw = Stopwatch.StartNew();
            using var scope = TorchSharp.torch.NewDisposeScope();
            var mix = m.Editor.Mix(a, b);
            return FromImages(mix, mix[0], new JsonObject
            {
                ["semantic_channels"] = m.Editor.SemanticChannels, ["residual_channels"] = m.Editor.ResidualChannels,
                ["precision"] = Runtime.Precision.Name(service.Precision),
            }, sw);
        }, new Disposables(a, b));
    }

    Prepared Reconstruct(ApiFields f, StudioModel m)
    {
        var service = m.Service;
        f.Allow("image", "precision");
        CheckPrecision(f, service);
        var image = Upload(f, m, "image");
        return new Prepared(item =>
        {
            item.Token.ThrowIfCancellationRequested();
            var sw = Stopwatch.StartNew();
            using var scope = TorchSharp.torch.NewDisposeScope();
            var x = m.Editor.Prepare(new[] { image });
            var rec = m.Editor.Decode(m.Editor.Encode(x));
            // As the CLI's reconstruct: the PSNR (data range 1) against the prepared original (resized, centre-cropped).
            double psnr = Evaluation.ImageMetrics.Psnr((x + 1) / 2, (rec + 1) / 2).item<double>();
            return FromImages(rec, rec[0], new JsonObject { ["precision"] = Runtime.Precision.Name(service.Precision), ["psnr_db"] = Math.Round(psnr, 2) }, sw);
        }, image);
    }

    void CheckPrecision(ApiFields f, GenerationService service)
    {
        if (f.String("precision") is string p) service.Plan(new GenerationRequest { Precision = p }, Limits);
    }

    /// <summary>
    /// An uploaded image decoded in memory to RGB uint8 [3, H, W], transparent pixels composited onto the model's
    /// training background when it has one; <paramref name="alsoDisposeOnError"/> are inputs decoded before it.
    /// </summary>
    TorchSharp.torch.Tensor Upload(ApiFields f, StudioModel m, string name, IDisposable? alsoDisposeOnError = null)
    {
        try
        {
            var bytes = f.File(name) ?? throw new ApiException(400, $"{name}: no image uploaded (a multipart file field, or base64 in JSON)");
            return Data.ImageFiles.DecodeRgb(bytes, $"{name} (uploaded image)", m.Service.Background, options.MaxUploadPixels);
        }
        catch
        {
            alsoDisposeOnError?.Dispose();
            throw;
        }
    }

    JsonObject Settings(StudioModel m, GenerationPlan plan)
    {
        var service = m.Service;
        var r = plan.Request;
        var s = new JsonObject { ["model"] = m.Name };
        if (plan.Rows > 0)
        {
            int perRow = plan.Count / plan.Rows;
            s["classes"] = new JsonArray(Enumerable.Range(0, plan.Rows).Select(i => (JsonNode)service.Classes.Name(plan.Labels[i * perRow])).ToArray());
        }
        s["labels"] = new JsonArray(plan.Labels.Select(l => (JsonNode)l).ToArray());
        s["n"] = r.Labels != null ? plan.Count : r.N;
        s["steps"] = plan.Sampler.Steps;
        s["cfg"] = plan.Guidance.Scale;
        s["guidance"] = r.Guidance;
        s["sampler"] = r.Sampler.Trim().ToLowerInvariant();
        s["shift"] = plan.Sampler.TimestepShift;
        s["seed"] = r.Seed;
        s["precision"] = Runtime.Precision.Name(service.Precision);
        return s;
    }

    /// <param name="alone">One image answered as itself, not as a grid of one (framed).</param>
    static ApiResult FromGeneration(StudioModel m, GenerationResult r, JsonObject settings, bool alone = false)
    {
        var service = m.Service;
        using var scope = TorchSharp.torch.NewDisposeScope();
        var images = Enumerable.Range(0, r.Labels.Length).Select(i =>
            new ApiImage(Data.ImageFiles.EncodePng(r.Images![i]), r.Labels[i], service.Classes.Name(r.Labels[i]))).ToList();
        byte[] grid = alone && images.Count == 1 ? images[0].Png : Data.ImageFiles.EncodePng(r.Grid());
        return new ApiResult(grid, images, settings, r.Elapsed.TotalSeconds);
    }

    static ApiResult FromImages(TorchSharp.torch.Tensor images, TorchSharp.torch.Tensor grid, JsonObject settings, Stopwatch sw)
    {
        var list = Enumerable.Range(0, (int)images.shape[0]).Select(i => new ApiImage(Data.ImageFiles.EncodePng(images[i]))).ToList();
        return new ApiResult(Data.ImageFiles.EncodePng(grid), list, settings, sw.Elapsed.TotalSeconds);
    }

    async Task Handle(HttpContext ctx, Func<ApiFields, StudioModel, Prepared> prepare)
    {
        var abort = ctx.RequestAborted;
        try
        {
            var fields = await ApiFields.ReadAsync(ctx.Request, abort);
            // The request is read for the model served now; should a switch come first in the queue, it is refused then.
            var model = _models.Current;
            Prepared prepared;
            try { prepared = prepare(fields, model); }
            catch (SvgdException e) { throw new ApiException(400, e.Message); }
            var item = Queue.TryEnqueue(w =>
            {
                _models.EnsureCurrent(model);
                return prepared.Work(w);
            }, abort, prepared.Inputs);
            if (item == null)
            {
                await Busy(ctx);
                return;
            }
            string accept = ctx.Request.Headers.Accept.ToString();
            if (accept.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase))
            {
                await StreamAsync(ctx, item);
                return;
            }
            var result = (ApiResult)await item.Completion.Task.WaitAsync(abort);
            if (accept.Contains("image/png", StringComparison.OrdinalIgnoreCase))
            {
                ctx.Response.StatusCode = 200;
                ctx.Response.ContentType = "image/png";
                ctx.Response.Headers["X-Svgd-Settings"] = result.Settings.ToJsonString();
                ctx.Response.Headers["X-Svgd-Seconds"] = result.Seconds.ToString("F3", System.Globalization.CultureInfo.InvariantCulture);
                ctx.Response.ContentLength = result.Grid.Length;
                await ctx.Response.Body.WriteAsync(result.Grid, abort);
            }
            else await Json(ctx, 200, result.ToJson());
        }
        catch (OperationCanceledException) when (abort.IsCancellationRequested) { /* the client went away: nobody to answer */ }
        catch (Exception e) when (!ctx.Response.HasStarted && !abort.IsCancellationRequested)
        {
            await Refuse(ctx, e);
        }
    }

    /// <summary>Server-sent events: "queued" (requests ahead), "progress" (done/total), then "result" or "error".</summary>
    async Task StreamAsync(HttpContext ctx, WorkItem item)
    {
        var abort = ctx.RequestAborted;
        var res = ctx.Response;
        res.StatusCode = 200;
        res.ContentType = "text/event-stream";
        res.Headers.CacheControl = "no-cache";
        res.Headers["X-Accel-Buffering"] = "no";
        int lastAhead = -1;
        (long, long) lastProgress = (-1, -1);
        while (true)
        {
            bool done = await Task.WhenAny(item.Completion.Task, Task.Delay(100, abort)) == item.Completion.Task;
            abort.ThrowIfCancellationRequested();
            if (item.State == WorkState.Waiting && item.Ahead != lastAhead)
            {
                lastAhead = item.Ahead;
                await Event(res, "queued", new JsonObject { ["ahead"] = lastAhead }, abort);
            }
            var p = item.Progress;
            if (p != lastProgress && p.Total > 0)
            {
                lastProgress = p;
                await Event(res, "progress", new JsonObject { ["done"] = p.Done, ["total"] = p.Total }, abort);
            }
            if (done) break;
        }
        try
        {
            var result = (ApiResult)await item.Completion.Task;
            await Event(res, "result", result.ToJson(), abort);
        }
        catch (Exception e) when (e is not OperationCanceledException || !abort.IsCancellationRequested)
        {
            var (status, message) = Describe(e);
            if (status == 500) LogFailure(ctx, e);
            var err = Error(message);
            err["status"] = status;
            await Event(res, "error", err, abort);
        }
    }

    static async Task Event(HttpResponse res, string name, JsonObject data, CancellationToken cancel)
    {
        await res.WriteAsync($"event: {name}\ndata: {data.ToJsonString(JsonOptions)}\n\n", Encoding.UTF8, cancel);
        await res.Body.FlushAsync(cancel);
    }

    static (int Status, string Message) Describe(Exception e) => e switch
    {
        ApiException a => (a.Status, a.Message),
        BadHttpRequestException b => (b.StatusCode, $"the request could not be read: {b.Message.Split('\n')[0].Trim()}"),
        OperationCanceledException => (503, "the server is stopping"),
        SvgdException s => (500, s.Message),
        _ => (500, $"internal error: {e.GetType().Name}: {e.Message.Split('\n')[0]}"),
    };

    /// <summary>The error body: one line, whatever the client's text quoted in it holds (a field name with a newline in it stays one line).</summary>
    static JsonObject Error(string message) => new() { ["error"] = SvgdException.OneLine(message) };

    static Task Json(HttpContext ctx, int status, JsonObject body)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json; charset=utf-8";
        return ctx.Response.WriteAsync(body.ToJsonString(JsonOptions), ctx.RequestAborted);
    }

    // Messages quote names ('sneker'); the default escaping would send them as \u0027, which is valid but unreadable.
    static readonly JsonSerializerOptions JsonOptions = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Frees the models this studio loaded (after its queue has stopped).</summary>
    public void Dispose() => _models.Dispose();

    sealed class Disposables(params IDisposable[] items) : IDisposable
    {
        public void Dispose() { foreach (var d in items) d.Dispose(); }
    }
}
