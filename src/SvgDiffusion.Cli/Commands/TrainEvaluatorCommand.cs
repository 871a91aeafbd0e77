using System.CommandLine;
using Spectre.Console;
using SvgDiffusion.Data;
using SvgDiffusion.Models.Evaluator;
using SvgDiffusion.Training;
using TorchSharp;

namespace SvgDiffusion.Cli.Commands;

internal static class TrainEvaluatorCommand
{
    public static Command Create(CliContext cli)
    {
        var train = new Option<string>("--train") { Description = "Training images: a folder with one sub-folder per class (e.g. from 'svgd import-idx').", Required = true };
        var test = new Option<string?>("--test") { Description = "Test images (same class folders): accuracy after every epoch, stored in the evaluator's header." };
        var output = new Option<string>("--out") { Description = "Run folder: last.safetensors (resumable), metrics.jsonl, loss.png and evaluator.safetensors (the weights to use).", Required = true }.OutputDir();
        var epochs = new Option<int>("--epochs") { Description = "Passes over the training images.", DefaultValueFactory = _ => new EvaluatorTrainingConfig().Epochs };
        var batch = new Option<int>("--batch-size") { Description = "Images per step.", DefaultValueFactory = _ => new EvaluatorTrainingConfig().BatchSize };
        var lr = new Option<double>("--lr") { Description = "AdamW peak learning rate (1 warmup epoch, then half-cosine to 0).", DefaultValueFactory = _ => new EvaluatorTrainingConfig().LearningRate };
        var size = new Option<int>("--size") { Description = "Input size the evaluator is built for (the images of the models it will judge).", DefaultValueFactory = _ => 32 };
        var seed = new Option<long>("--seed") { Description = "Seed of the initialisation and of every random draw (order, shifts, flips, dropout).", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "Continue from <out>/last.safetensors where it stopped." };
        var colour = new Option<bool>("--colour") { Description = "Judge colour: the network sees RGB (for colour data such as emoji) instead of luminance (the default, Fashion-MNIST's)." };
        var cmd = new Command("train-evaluator", "Train the small classifier that scores generated images (FD-evaluator, class accuracy, precision/recall) from outside every model under study.")
        { train, test, output, epochs, batch, lr, size, colour, seed, resume };
        cmd.SetAction(SvgdCli.Guard(cli, p =>
        {
            var console = cli.Console;
            using var cancel = new CtrlC();
            string outDir = p.GetValue(output)!;
            string last = Path.Combine(outDir, "last.safetensors"), final = Path.Combine(outDir, "evaluator.safetensors");
            int s = p.GetValue(size);
            var trainFolder = new ImageFolder(p.GetValue(train)!);
            if (trainFolder.ClassNames.Count < 2) throw new SvgdException($"{trainFolder.Root}: needs one sub-folder per class (at least 2)");
            ImageFolder? testFolder = p.GetValue(test) is string tp ? new ImageFolder(tp) : null;
            if (testFolder != null && !testFolder.ClassNames.SequenceEqual(trainFolder.ClassNames))
                throw new SvgdException($"{testFolder.Root}: class folders ({string.Join(", ", testFolder.ClassNames)}) differ from the training set's ({string.Join(", ", trainFolder.ClassNames)})");

            torch.Tensor trainX = null!, trainY = null!, testX = null!, testY = null!;
            ProgressBars.Run(console, "decode images", trainFolder.Count + (testFolder?.Count ?? 0), step =>
            {
                (trainX, trainY) = EvaluatorTrainer.Preload(trainFolder, s, n => step(n), p.GetValue(colour) ? 3 : 1);
                if (testFolder != null) (testX, testY) = EvaluatorTrainer.Preload(testFolder, s, n => step(n), p.GetValue(colour) ? 3 : 1);
            });

            EvaluatorTrainer trainer;
            if (p.GetValue(resume))
            {
                if (!File.Exists(last)) throw new SvgdException($"{last}: nothing to resume");
                trainer = EvaluatorTrainer.Resume(last, trainX, trainY);
                console.MarkupLine($"resumed at step {trainer.Step}");
            }
            else
            {
                var cfg = new EvaluatorTrainingConfig { Epochs = p.GetValue(epochs), BatchSize = p.GetValue(batch), LearningRate = p.GetValue(lr), Seed = p.GetValue(seed) }.Validate();
                torch.manual_seed(cfg.Seed);
                var model = new EvaluatorNet(new EvaluatorConfig { ImageSize = s, InputChannels = p.GetValue(colour) ? 3 : 1, NumClasses = trainFolder.ClassNames.Count });
                trainer = new EvaluatorTrainer(model, trainX, trainY, cfg);
            }
            using var _ = trainer;
            // The peak memory of a step, checked before anything is written (the small model is built: its memory counts as held).
            TrainingMemory.Require(b => TrainingMemory.Evaluator(trainer.Model.parameters().Sum(q => q.numel()), s, b), trainer.Config.BatchSize, "--size");
            Directory.CreateDirectory(outDir);
            var log = new TrainingLog(Path.Combine(outDir, "metrics.jsonl"), trainer.Step);
            console.MarkupLine($"{trainFolder.Count} training images, {trainFolder.ClassNames.Count} classes, {s}px; {trainer.Config.Epochs} epochs of {trainer.StepsPerEpoch} steps");
            double? top1 = null;
            console.Progress().AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("train", maxValue: trainer.TotalSteps);
                    task.Value = trainer.Step;
                    while (trainer.Step < trainer.TotalSteps && !cancel.Requested)
                    {
                        var r = trainer.TrainStep();
                        task.Value = r.Step;
                        var row = new Dictionary<string, double> { ["loss"] = r.Loss, ["lr"] = r.LearningRate };
                        if (r.Step % trainer.StepsPerEpoch == 0)
                        {
                            if (testFolder != null)
                            {
                                var (acc, tl) = EvaluatorTrainer.Evaluate(trainer.Model, testX, testY);
                                (row["test_top1"], row["test_loss"], top1) = (acc, tl, acc);
                                console.MarkupLine($"epoch {r.Step / trainer.StepsPerEpoch}: test top-1 {acc:P2}, loss {tl:F4}");
                            }
                            trainer.Save(last);
                        }
                        log.Add(r.Step, row);
                        task.Description = $"train loss {r.Loss:F4}";
                    }
                });
            trainer.Save(last);
            log.Plot(Path.Combine(outDir, "loss.png"), "evaluator training", new[] { "loss", "test_loss" }, smooth: 50);
            if (cancel.Requested)
            {
                console.MarkupLine($"stopped by {cancel.Signal} at step {trainer.Step}; continue with --resume");
                return cancel.ExitCode;
            }
            if (testFolder != null && top1 == null) top1 = EvaluatorTrainer.Evaluate(trainer.Model, testX, testY).Top1;
            EvaluatorCheckpoint.Save(trainer.Model, final, trainFolder.ClassNames, top1);
            console.MarkupLine($"wrote [bold]{Markup.Escape(final)}[/]{(top1 is double a ? $" (test top-1 {a:P2})" : "")}");
            return 0;
        }));
        return cmd;
    }
}
