using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// The nested VM together with what the processor may have cached for L2 (docs/nested-ept.md, "Oracle 2 in the
/// property"): <see cref="NestedEptState"/> walks L1's EPT as it is now; <see cref="EptTlb"/>, fed from the same
/// operations here and nowhere else, says which older translations L2 may still get. An L2 access has two allowed
/// outcomes: the walk now (its EPT A/D writes land), or a guest-physical mapping cached since the last invalidation
/// that covers it (<see cref="ServedFromCache"/>: no A/D write).
/// </summary>
/// <param name="Tlb">The architecture layer from the first VM entry on (null before: nothing can be cached).</param>
public sealed partial record NestedEptMachine(NestedEptState State, EptTlb? Tlb)
{
    public static NestedEptMachine Create(EptCapabilities caps) => new(NestedEptState.Create(caps), null);

    /// <summary>The spec's step (the walk now), the layer told of every change of L1's memory, EPTP load, INVEPT and violation.</summary>
    public (NestedEptMachine Next, VmResult Result) Step(NestedEptOp op)
    {
        var (state, result) = State.Step(op);
        bool ok = result is not VmResult.Rejected;
        var tlb = Tlb;
        if (tlb is not null && (!ReferenceEquals(State.Host, state.Host) || !ReferenceEquals(State.Slots, state.Slots)))
            tlb = tlb.Write(state.L1Memory);
        switch (op)
        {
            // Every VM entry is an EPTP switch for the layer: with VPID it invalidates nothing (§29.4.3.2).
            case NestedEptOp.LoadEptp l when ok:
                tlb = tlb is null ? EptTlb.Start(state.Caps, state.L1Memory, l.Eptp, globalPages: L2GlobalPages) : tlb.Apply(new EptTlbOp.EptpSwitch(l.Eptp, ByVmfunc: false));
                break;
            case NestedEptOp.Invept i when ok && tlb is not null:
                tlb = tlb.Apply(new EptTlbOp.Invept(i.Type, i.Eptp));
                break;
            case NestedEptOp.L2Access a when result is NestedEptResult.EptExit { Exit: EptResult.Violation } && tlb is not null:
                tlb = tlb.Apply(new EptTlbOp.EptViolation(a.Gpa, null));
                break;
            case NestedEptOp.L2GvaAccess when result is NestedEptResult.EptExit { Exit: EptResult.Violation v } && tlb is not null:
                tlb = tlb.Apply(new EptTlbOp.EptViolation(v.Gpa, v.LinearAddress));
                break;
            default:
                tlb = tlb is null ? null : StepVpid(tlb, op, state, result);   // NestedEptMachine.Vpid.cs
                break;
        }
        return (this with { State = state, Tlb = tlb }, result);
    }

    /// <summary>
    /// The machine after L2's access <paramref name="a"/> was answered with <paramref name="result"/> from a guest-physical
    /// mapping the processor cached (SDM Vol. 3C §29.4.1), or null when no allowed mapping gives it (<paramref name="why"/>
    /// says so). The mapping must be what the EPT gave for the access at a moment since the last invalidation of the
    /// gpa's mappings (<see cref="EptTlb.AllowedGuestPhysical"/>), L1's gpa still backed as the memslots back it now (the
    /// host's memslots are L0's business, not the cache's). Using a cached mapping walks nothing, so it writes no EPT A/D
    /// bit (§29.3.4: a flag cleared by software may not be set again while a translation is cached); but a write through
    /// a mapping cached while its leaf was clean must set D (§29.3.4), so with EPT A/D a write is served from the cache
    /// only by a mapping whose leaf was dirty then. A cached fault on rights is a violation and invalidates as one.
    /// </summary>
    public NestedEptMachine? ServedFromCache(NestedEptOp.L2Access a, VmResult result, out string why)
    {
        if (Tlb is not { } tlb || State.Eptp is not { } eptp)
        {
            why = "nothing is cached before the first VM entry";
            return null;
        }
        var access = new EptAccess(a.Gpa, a.Type);
        int from = tlb.GuestPhysicalFrom(a.Gpa);
        var seen = new List<EptResult>();
        for (int i = tlb.Memories.Count - 1; i >= from; i--)
        {
            var walk = EptWalk.Explain(State.Caps, eptp, tlb.Memories[i], access);
            seen.Add(walk.Result);
            bool setsDirty = walk.Updates.Any(u => ((u.Before ^ u.After) & EptEntry.Dirty) != 0);
            switch (result, walk.Result)
            {
                case (NestedEptResult.Translated t, EptResult.Translated w) when t.L2Gpa == a.Gpa && t.L1Gpa == w.L1Gpa && State.Hpa(w.L1Gpa) == t.Hpa && !setsDirty:
                case (NestedEptResult.MmioExit m, EptResult.Translated x) when m.L1Gpa == x.L1Gpa && State.Hpa(x.L1Gpa) is null:
                    why = $"a guest-physical mapping cached from L1 memory {i} of {tlb.Memories.Count} (since the last invalidation of gpa {Bits.Hex(a.Gpa)}: memory {from})";
                    return this;
                case (NestedEptResult.EptExit { Exit: EptResult.Violation v }, EptResult.Violation w) when v.Equals(w) && (w.Qualification.Readable || w.Qualification.Writable || w.Qualification.Executable):
                    why = $"a fault on the rights of a guest-physical mapping cached from L1 memory {i} of {tlb.Memories.Count}";
                    return this with { Tlb = tlb.Apply(new EptTlbOp.EptViolation(a.Gpa, null)) };
            }
        }
        why = $"no guest-physical mapping cached since the last invalidation of gpa {Bits.Hex(a.Gpa)} (memory {from} of {tlb.Memories.Count}) gives it"
            + (result is NestedEptResult.Translated && a.Type == AccessType.Write && tlb.Eptp.AccessedDirtyEnabled ? " with its leaf already dirty" : "")
            + $": the EPT gave {string.Join("; ", seen.Distinct())}";
        return null;
    }

    public override string ToString() => $"{State}; {(Tlb is null ? "nothing cached" : Tlb.ToString())}";
}
