using SvgDiffusion.Data;
using TorchSharp;
using static TorchSharp.torch;
using Xunit;

namespace SvgDiffusion.Tests;

public class ImageTests
{
    [Fact]
    public void PngRoundTripsExactly()
    {
        string p = Path.Combine(Reference.TempDir(), "x.png");
        using var img = torch.randint(0, 256, new long[] { 3, 17, 23 }, dtype: ScalarType.Byte);
        ImageFiles.SavePng(img, p);
        using var back = ImageFiles.LoadRgb(p);
        Assert.True(Reference.Same(img, back));
    }

    [Fact]
    public void ResizeAveragesLikeAnAntialiasedFilter()
    {
        // A 2x2 checkerboard of 4x4 blocks shrunk by 4 becomes its block means exactly; downscaling a
        // fine checkerboard without antialias would alias to one of its colours instead of grey.
        var fine = (torch.arange(64).remainder(2) + torch.arange(64).unsqueeze(1).remainder(2)).remainder(2) * 255;
        var rgb = fine.to(ScalarType.Byte).unsqueeze(0).expand(3, -1, -1).contiguous();
        var small = new Preprocessing(16, 16).ResizeUnit(rgb);
        Assert.Equal(new long[] { 3, 16, 16 }, small.shape);
        Assert.True((small - 0.5).abs().max().item<float>() < 0.02, "antialiased downscale of a fine checkerboard is grey");
        var norm = Preprocessing.Normalize(small);
        Assert.Equal((0.5 - 0.485) / 0.229, norm[0, 5, 5].item<float>(), 1);
    }

    [Fact]
    public void GridPlacesImagesRowMajor()
    {
        var imgs = torch.stack(Enumerable.Range(0, 5).Select(i => torch.full(new long[] { 3, 4, 4 }, (float)i)).ToArray());
        var grid = ImageFiles.Grid(imgs, columns: 2, padding: 1, padValue: -1);
        Assert.Equal(new long[] { 3, 1 + 3 * 5, 1 + 2 * 5 }, grid.shape);
        Assert.Equal(3f, grid[0, 1 + 5 + 1, 1 + 5 + 1].item<float>());
        Assert.Equal(4f, grid[0, 1 + 10, 1].item<float>());
        Assert.Equal(-1f, grid[0, 1 + 10, 1 + 5].item<float>());
    }
}
