using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

public sealed partial class TdpLinSpec
{
    /// <summary>
    /// The state after a host unmap's last step: what the TLBs may still hold over its range ends at its return
    /// (<see cref="VcpuTlbs.Unmapped"/>), whoever owed the flush; other ops keep <paramref name="next"/>.
    /// </summary>
    static TdpLinState Unmapped(TdpLinState next, TdpOp op, long returnedAt)
    {
        var range = op switch
        {
            TdpOp.ZapRange z => new GfnRange(z.StartGfn, z.EndGfn),
            TdpOp.HostInvalidateStart i => new GfnRange(i.StartGfn, i.EndGfn),
            _ => (GfnRange?)null,
        };
        if (range is not { } r || next.Spec is null) return next;
        var tlbs = next.Tlbs.Unmapped(GfnRanges.Of(r), returnedAt);
        return ReferenceEquals(tlbs, next.Tlbs) ? next : new TdpLinState(next.Spec, tlbs);
    }
}
