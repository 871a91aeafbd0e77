using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Server;

namespace SvgDiffusion.Cli.Commands;

internal static class ServeCommand
{
    public static Command Create(CliContext cli)
    {
        var models = new GenerationModelOptions();
        var defaults = new StudioOptions();
        var host = new Option<string>("--host") { Description = "Address to listen on: localhost (this machine only) or an IP address; 0.0.0.0 opens the studio to the network.", DefaultValueFactory = _ => defaults.Host };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free one, printed at start).", DefaultValueFactory = _ => defaults.Port };
        var queue = new Option<int>("--queue") { Description = "Requests that may wait while one runs; beyond that the API answers 429 with Retry-After.", DefaultValueFactory = _ => defaults.QueueCapacity };
        var maxN = new Option<int>("--max-n") { Description = "Most images one request may make (n times the classes, variations).", DefaultValueFactory = _ => defaults.MaxSamples };
        var maxSteps = new Option<int>("--max-steps") { Description = "Most solver steps one request may ask for.", DefaultValueFactory = _ => defaults.MaxSteps };
        var maxFrames = new Option<int>("--max-frames") { Description = "Most frames of one interpolation.", DefaultValueFactory = _ => defaults.MaxFrames };
        var maxUpload = new Option<int>("--max-upload-mb") { Description = "Largest request body in MiB, uploads included (held in memory, never written to disk).", DefaultValueFactory = _ => (int)(defaults.MaxUploadBytes >> 20) };
        var precision = PrecisionOption.Create();
        var cmd = new Command("serve", "The studio: a web page and a JSON/PNG HTTP API (POST /api/generate, /api/vary, /api/recolor, /api/interpolate, /api/mix, /api/reconstruct; GET /api/model, /api/models) over one model in memory; the page (POST /api/model) switches between the bundled models. Ctrl+C stops it.")
        { host, port, queue, maxN, maxSteps, maxFrames, maxUpload, precision };
        foreach (var o in models.Options(sampling: false)) cmd.Options.Add(o);
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var options = new StudioOptions
            {
                Host = p.GetValue(host)!, Port = p.GetValue(port), QueueCapacity = p.GetValue(queue), MaxSamples = p.GetValue(maxN),
                MaxSteps = p.GetValue(maxSteps), MaxFrames = p.GetValue(maxFrames), MaxUploadBytes = (long)p.GetValue(maxUpload) << 20,
            }.Validate();
            var dtype = PrecisionOption.Parse(p, precision);
            using var loaded = models.Load(p, cli, dtype);
            var gate = new object();
            using var stop = new CtrlC();
            var server = StudioServer.StartAsync(loaded.Service, options with
            {
                ModelName = loaded.Name,
                ModelIsBundled = IsBundled(models, p),
                Log = line => { lock (gate) cli.Console.WriteLine(line); },
            }, stop.Token).GetAwaiter().GetResult();
            try
            {
                var m = loaded.Service.Model.Config;
                cli.Console.MarkupLine($"studio for [bold]{Markup.Escape(loaded.Name)}[/] (DiT {m.Depth}x{m.HiddenSize}, {loaded.Service.Classes.NumClasses} classes, {Runtime.Precision.Name(dtype)}) at [bold]{Markup.Escape(server.Address.ToString())}[/]; Ctrl+C stops it");
                if (!options.IsLocalhost) cli.Warn($"listening on {options.Host}: anyone who can reach this address can use the studio (there is no authentication)");
                stop.Token.WaitHandle.WaitOne();
                cli.Console.MarkupLine("stopping");
            }
            finally
            {
                server.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
            return stop.ExitCode;
        }));
        return cmd;
    }

    /// <summary>Whether the served model is a bundled model whole: its folder under models/, with its own autoencoder and statistics.</summary>
    static bool IsBundled(GenerationModelOptions models, ParseResult p)
    {
        if (p.GetValue(models.Autoencoder.Autoencoder) != null || p.GetValue(models.DiT.Stats) != null || p.GetValue(models.DiT.NoStats) || models.Folder(p) is not { } folder) return false;
        string bundled = Path.GetFullPath(Path.Combine(SvgDiffusion.Sampling.ModelFolder.BundledRoot, folder.Name));
        return string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder.Directory)), bundled, StringComparison.Ordinal);
    }
}
