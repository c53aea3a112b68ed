using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>The situations of VPIDs, VM entries and exits, INVVPID and VMFUNC in nested-EPT cases (docs/coverage.md), from the spec's steps and, for the gva TLB, a run.</summary>
public static class NestedEptVpidCoverage
{
    // Heard through NestedEptFamily's observer: the impl's gva TLB answered, and oracle 2 allowed an answer the walk now would not give.
    public const string GvaTlbHit = "gva TLB: a translation served from the TLB";
    public const string StaleCombinedUsed = "gva TLB: stale combined mapping used within the allowance";

    public static readonly IReadOnlyList<string> Situations =
    [
        "INVVPID: individual-address", "INVVPID: single-context", "INVVPID: all-contexts", "INVVPID: single-context retaining globals",
        "INVVPID: rejected", "INVVPID: a global mapping retained",
        "VM entry: with VPID", "VM entry: without VPID", "VM entry: VPID12 changed", "VM entry: rejected",
        "VM exit: with VPID", "VM exit: without VPID",
        "VMFUNC: EPTP switched", "VMFUNC: VM exit",
        GvaTlbHit, StaleCombinedUsed,
    ];

    /// <summary>What `nested-ept-vpid` is expected to reach: every situation here and a few L2 basics.</summary>
    public static IReadOnlyList<string> Expected { get; } =
        ["EPTP: 4-level", "EPTP: 5-level", "L2 gva: translated", "L2 gva: #PF for L2", "L2 gva: EPT violation on the final access", .. Situations];

    /// <summary>The spec-side situations; globals are retained when a type-3 INVVPID meets a gva translated from a global leaf since the VPID's last flush.</summary>
    public static void Spec(NestedEptCase c, Action<string> hit)
    {
        var state = NestedEptState.Create(c.Config.Caps);
        var globals = new HashSet<ushort>(); // VPIDs with a global translation cached since their last flush
        ushort lastVpid = state.Vpid.Vpid;
        foreach (var op in c.AllOps)
        {
            var before = state;
            VmResult result;
            try { (state, result) = state.Step(op); }
            catch (ArgumentException) { return; }
            bool ok = result is not VmResult.Rejected;
            switch (op)
            {
                case NestedEptOp.Invvpid i when ok:
                    hit(i.Type switch
                    {
                        InvvpidType.IndividualAddress => "INVVPID: individual-address",
                        InvvpidType.SingleContext => "INVVPID: single-context",
                        InvvpidType.AllContexts => "INVVPID: all-contexts",
                        _ => "INVVPID: single-context retaining globals",
                    });
                    if (i.Type == InvvpidType.SingleContextRetainingGlobals && globals.Contains(i.Vpid)) hit("INVVPID: a global mapping retained");
                    if (i.Type == InvvpidType.AllContexts) globals.Clear();
                    break;
                case NestedEptOp.Invvpid:
                    hit("INVVPID: rejected");
                    break;
                case NestedEptOp.VmEntry e when ok:
                    hit(e.VpidEnabled ? "VM entry: with VPID" : "VM entry: without VPID");
                    if (e.VpidEnabled && e.Vpid != lastVpid) hit("VM entry: VPID12 changed");
                    if (e.VpidEnabled) lastVpid = e.Vpid;
                    break;
                case NestedEptOp.VmEntry:
                    hit("VM entry: rejected");
                    break;
                case NestedEptOp.VmExit when ok:
                    hit(before.Vpid.VpidEnabled ? "VM exit: with VPID" : "VM exit: without VPID");
                    break;
                case NestedEptOp.Vmfunc:
                    if (result is NestedEptResult.VmfuncExit) hit("VMFUNC: VM exit");
                    else if (ok && before.Eptp != state.Eptp) hit("VMFUNC: EPTP switched");
                    break;
                case NestedEptOp.L2GvaAccess g when result is NestedEptResult.Translated && c.Config.L2GlobalPages && before.L2Cpu is not null && before.Eptp is { } eptp:
                    var walk = NestedWalk.Explain(before.Caps, eptp, before.L2Cpu, before.L1Memory, g.Access);
                    if (walk.GuestWalk is { Steps: [.., var leaf] } && Bits.Test(leaf.Entry.Raw, 8)) globals.Add(before.Vpid.Current);
                    break;
            }
        }
    }
}
