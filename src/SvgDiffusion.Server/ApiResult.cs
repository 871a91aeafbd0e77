using System.Text.Json.Nodes;

namespace SvgDiffusion.Server;

/// <summary>
/// What an endpoint sends back, made on the worker thread (tensors never leave it): PNG bytes of every image
/// and of the grid, and the settings actually used.
/// </summary>
public sealed record ApiResult(byte[] Grid, IReadOnlyList<ApiImage> Images, JsonObject Settings, double Seconds)
{
    /// <summary>The JSON reply: base64 PNGs, the grid, the settings and the time taken.</summary>
    public JsonObject ToJson()
    {
        var images = new JsonArray();
        foreach (var im in Images)
        {
            var o = new JsonObject { ["png"] = Convert.ToBase64String(im.Png) };
            if (im.Label is int l) { o["label"] = l; o["class"] = im.ClassName; }
            images.Add(o);
        }
        return new JsonObject
        {
            ["images"] = images,
            ["grid"] = Convert.ToBase64String(Grid),
            ["settings"] = Settings.DeepClone(),
            ["seconds"] = Math.Round(Seconds, 3),
        };
    }
}

/// <summary>One image: its PNG, and its label where it was generated for one.</summary>
public sealed record ApiImage(byte[] Png, int? Label = null, string? ClassName = null);
