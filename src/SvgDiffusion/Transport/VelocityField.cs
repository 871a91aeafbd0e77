using static TorchSharp.torch;

namespace SvgDiffusion.Transport;

/// <summary>
/// A learned velocity v(x, t, y) of the flow from noise (t = 0) to data (t = 1): for x [B, ...], t [B]
/// and labels y [B], a tensor shaped like x. <see cref="Models.Diffusion.DiT.Velocity"/> is one.
/// </summary>
public delegate Tensor VelocityField(Tensor x, Tensor t, Tensor y);
