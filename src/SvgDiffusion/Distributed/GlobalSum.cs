using TorchSharp;
using static TorchSharp.torch;

namespace SvgDiffusion.Distributed;

/// <summary>
/// A sum over the ranks that autograd can differentiate: every rank's loss depends on every rank's
/// input to the sum, so the gradient of each input is the sum over ranks of the gradients of the sum.
/// This is what makes batch statistics of a sharded batch train like those of the whole batch.
/// </summary>
public static class GlobalSum
{
    /// <summary>The sum of <paramref name="x"/> over the ranks of <paramref name="comm"/> (float64, same shape).</summary>
    public static Tensor Of(Tensor x, ICommunicator comm) =>
        comm.Size == 1 ? x.to(ScalarType.Float64) : AllreduceSumFunction.apply(x.to(ScalarType.Float64), comm);

    sealed class AllreduceSumFunction : autograd.SingleTensorFunction<AllreduceSumFunction>
    {
        const string CommKey = "comm";
        public override string Name => "AllreduceSum";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var comm = (ICommunicator)vars[1];
            ctx.save_data(CommKey, comm);
            var sum = ((Tensor)vars[0]).detach().contiguous().clone();
            comm.AllreduceSum(sum);
            return sum;
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var comm = (ICommunicator)ctx.get_data(CommKey);
            var grad = gradOutput.to(ScalarType.Float64).contiguous().clone();
            comm.AllreduceSum(grad);
            return new List<Tensor> { grad, null! };
        }
    }
}
