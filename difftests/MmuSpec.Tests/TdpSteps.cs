using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests;

/// <summary>
/// TDP ops by gfn and a checked run of the spec, shared by the spec's model tests, the linearizability tests and the
/// Coyote explorations (import with <c>using static</c>).
/// </summary>
public static class TdpSteps
{
    public static TdpOp Read(ulong gfn) => new TdpOp.AccessGpa(gfn << 12, AccessType.Read);

    public static TdpOp Write(ulong gfn) => new TdpOp.AccessGpa(gfn << 12, AccessType.Write);

    /// <summary>Steps <paramref name="ops"/> from <paramref name="s"/>; the spec must take every one (a rejected setup step would leave the test checking nothing).</summary>
    public static TdpState Run(TdpState s, params IEnumerable<TdpOp> ops)
    {
        foreach (var op in ops)
        {
            var stepped = s.Step(op);
            Assert.IsNotType<VmResult.Rejected>(stepped.Result);
            s = stepped.State;
        }
        return s;
    }
}
