System.Console.WriteLine(SvgDiffusion.Runtime.TorchRuntime.Compat);
System.Console.WriteLine(TorchSharp.torch.ones(2).sum().item<float>());
