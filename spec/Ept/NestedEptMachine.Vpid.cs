using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// VPIDs, VM entries and exits, VMFUNC EPTP switching and INVVPID fed to the architecture layer, and the combined-mapping
/// allowance (docs/nested-ept.md, "VPIDs, VM entries and exits, EPTP switching").
/// </summary>
public sealed partial record NestedEptMachine
{
    /// <summary>L2 runs with CR4.PGE: a combined mapping from an L2 leaf with G is global (INVVPID type 3 keeps it).</summary>
    public bool L2GlobalPages { get; init; }

    public static NestedEptMachine Create(EptCapabilities caps, bool l2GlobalPages) => Create(caps) with { L2GlobalPages = l2GlobalPages };

    static EptTlb StepVpid(EptTlb tlb, NestedEptOp op, NestedEptState state, VmResult result) => (op, result) switch
    {
        (NestedEptOp.VmEntry e, VmResult.Ok) => tlb.Apply(new EptTlbOp.VmEntry(e.VpidEnabled, e.Vpid, state.Eptp!.Value)),
        (NestedEptOp.VmExit, VmResult.Ok) => tlb.Apply(new EptTlbOp.VmExit()),
        (NestedEptOp.Invvpid i, VmResult.Ok) => tlb.Apply(new EptTlbOp.Invvpid(i.Type, i.Vpid, i.Gva)),
        // §26.5.6.3: VMFUNC's EPTP switch invalidates nothing (§29.4.3.2); a failed one is a VM exit.
        (NestedEptOp.Vmfunc, VmResult.Ok) when tlb.Eptp != state.Eptp => tlb.Apply(new EptTlbOp.EptpSwitch(state.Eptp!.Value, ByVmfunc: true)),
        (NestedEptOp.Vmfunc, NestedEptResult.VmfuncExit) => tlb.Apply(new EptTlbOp.VmExit()),
        _ => tlb,
    };

    /// <summary>
    /// The machine after L2's access <paramref name="g"/> by linear address was answered with <paramref name="result"/> from
    /// a combined mapping the processor cached (SDM Vol. 3C §29.4.1), or null when none allowed gives it (<paramref name="why"/>
    /// says so). The result must be one <see cref="EptTlb.Violation"/> allows (L2's tables and the EPT at a moment since the
    /// last invalidation covering the current VPID, EP4TA and gva page, globals kept by a retaining INVVPID), L1's gpa backed
    /// by the memslots as they are now. Using a cached mapping walks nothing, so neither L2's nor the EPT's A/D bits are
    /// written; a write is served only by a mapping cached while it was dirty (§4.8, §29.3.4: a write through a clean one
    /// must set D): a moment since the last invalidation whose walk for this write sets no D bit in either dimension.
    /// </summary>
    public NestedEptMachine? ServedFromCombined(NestedEptOp.L2GvaAccess g, VmResult result, out string why)
    {
        if (Tlb is not { } tlb || State.L2Cpu is not { } cpu)
        {
            why = Tlb is null ? "nothing is cached before the first VM entry" : "L2's paging is off: no combined mapping";
            return null;
        }
        if (result is not NestedEptResult.Translated t || State.Hpa(t.L1Gpa) != t.Hpa)
        {
            why = result is NestedEptResult.Translated ? $"hpa {Bits.Hex(((NestedEptResult.Translated)result).Hpa)} is not what the memslots back L1's gpa with now" : "only a translation is served from a cached combined mapping here";
            return null;
        }
        var observed = new NestedResult.Translated(t.L2Gpa, null, null, new EptResult.Translated(t.L1Gpa, PageSize.Size4K, EptRights.All, EptMemoryType.WriteBack, false));
        if (tlb.Violation(cpu, g.Access, observed) is { } not)
        {
            why = not;
            return null;
        }
        if (g.Access.Type == AccessType.Write)
        {
            for (int b = tlb.Memories.Count - 1; b >= 0; b--)
            {
                var walk = NestedWalk.Explain(tlb.Caps, tlb.Eptp, cpu, tlb.Memories[b], g.Access);
                bool global = tlb.GlobalPages && walk.GuestWalk is { Result: WalkResult.Translated, Steps: [.., var leaf] } && Bits.Test(leaf.Entry.Raw, 8);
                if (b < tlb.CombinedFrom(g.Access.Gva, global)) continue;
                bool setsDirty = walk.GuestUpdates.Any(u => ((u.Before ^ u.After) & PagingEntry.Dirty) != 0)
                                 || walk.EptWalks.Any(w => w.Walk.Updates.Any(u => ((u.Before ^ u.After) & EptEntry.Dirty) != 0));
                if (walk.Result is NestedResult.Translated w && w.L2Gpa == t.L2Gpa && w.Ept.L1Gpa == t.L1Gpa && !setsDirty)
                {
                    why = $"a dirty combined mapping cached from L1 memory {b} of {tlb.Memories.Count} (VPID {tlb.CurrentVpid})";
                    return this;
                }
            }
            why = $"a write needs a combined mapping cached while dirty; none since the last invalidation of gva {Bits.Hex(g.Access.Gva)} gives {result}";
            return null;
        }
        why = $"a combined mapping cached since the last invalidation of gva {Bits.Hex(g.Access.Gva)} (VPID {tlb.CurrentVpid})";
        return this;
    }
}
