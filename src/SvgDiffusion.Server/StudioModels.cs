using SvgDiffusion.Sampling;

namespace SvgDiffusion.Server;

/// <summary>A model the studio serves: its name, the service over it, and whether the studio loaded it (and so frees it).</summary>
internal sealed class StudioModel(string name, GenerationService service, bool owned) : IDisposable
{
    public string Name => name;
    public GenerationService Service => service;
    /// <summary>Every model the studio serves has one: <see cref="StudioModels"/> refuses the others.</summary>
    public SemanticEditor Editor => service.Editor!;

    public void Dispose()
    {
        if (owned) Free(service);
    }

    /// <summary>Frees a service's networks.</summary>
    public static void Free(GenerationService service)
    {
        service.Model.Dispose();
        service.Autoencoder?.Dispose();
        service.Statistics?.Dispose();
    }
}

/// <summary>
/// The model the studio serves now, and the switch to another bundled model (<see cref="ModelFolder.BundledNames"/>,
/// by name only: never a path from a client). <see cref="Switch"/> runs on the work queue's worker, so a switch
/// waits for the requests queued before it and no request runs while models change; a request that was read
/// for the previous model is refused when its turn comes (<see cref="EnsureCurrent"/>). The model the server was
/// started with belongs to its caller and is kept; the models loaded here are freed when switched away from.
/// </summary>
internal sealed class StudioModels : IDisposable
{
    readonly StudioModel _initial;
    readonly bool _initialIsBundled;
    volatile StudioModel _current;

    public StudioModels(GenerationService service, string name, bool isBundled)
    {
        if (service.Editor == null) throw new SvgdException("the studio needs an SVG autoencoder (its editing splits semantic and detail channels)");
        _initial = new StudioModel(name, service, owned: false);
        _initialIsBundled = isBundled;
        _current = _initial;
    }

    public StudioModel Current => _current;

    /// <summary>The models a client may switch to, sorted.</summary>
    public static IReadOnlyList<string> Bundled => ModelFolder.BundledNames;

    /// <summary>Refuses (400, listing the known names) a name that is not a bundled model's.</summary>
    public static string RequireBundled(string? name)
    {
        var known = Bundled;
        if (name == null) throw new ApiException(400, $"name: give a bundled model's name ({List(known)})");
        if (!known.Contains(name, StringComparer.Ordinal))
            throw new ApiException(400, $"name: no bundled model '{name}' (bundled: {List(known)})");
        return name;
    }

    static string List(IReadOnlyList<string> names) => names.Count == 0 ? "none in this build" : string.Join(", ", names);

    /// <summary>
    /// Serves the bundled model <paramref name="name"/> from now on (on the worker thread): nothing to do when it is
    /// served already, the starting model again when that was this bundled model, else loaded in the current precision.
    /// </summary>
    public StudioModel Switch(string name)
    {
        RequireBundled(name);
        var old = _current;
        if (old.Name == name && (old != _initial || _initialIsBundled)) return old;
        StudioModel next;
        if (name == _initial.Name && _initialIsBundled) next = _initial;
        else
        {
            var folder = ModelFolder.Bundled(name);
            // Refused from the file's header, before anything is loaded; the check after loading covers whatever else is not SVG.
            if (Models.Autoencoder.AutoencoderFile.IsVae(folder.AutoencoderPath)) throw NotSvg(name, old);
            var service = folder.Load(old.Service.Precision);
            if (service.Editor == null)
            {
                StudioModel.Free(service);
                throw NotSvg(name, old);
            }
            next = new StudioModel(name, service, owned: true);
        }
        _current = next;
        old.Dispose();
        return next;
    }

    static ApiException NotSvg(string name, StudioModel current) =>
        new(409, $"name: the bundled model '{name}' has a VAE autoencoder, and the studio's edits need an SVG autoencoder; still serving '{current.Name}'");

    /// <summary>Refuses (409) work read for a model that is no longer served (switched while the work waited).</summary>
    public void EnsureCurrent(StudioModel model)
    {
        var now = _current;
        if (!ReferenceEquals(model, now))
            throw new ApiException(409, $"the studio switched from model '{model.Name}' to '{now.Name}' while this request waited; send it again");
    }

    public void Dispose()
    {
        var last = _current;
        _current = _initial;
        last.Dispose();
    }
}
