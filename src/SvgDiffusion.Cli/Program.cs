return SvgDiffusion.Cli.SvgdCli.Run(args);
