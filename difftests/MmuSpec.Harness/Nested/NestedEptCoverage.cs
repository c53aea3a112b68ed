using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>
/// The situations of nested-EPT cases (docs/coverage.md), judged from outside both sides: each operation, the spec's
/// result, and the spec's L1 memory before and after it (the EPT walk's explanation says which entry ended it).
/// </summary>
public static class NestedEptCoverage
{
    public static readonly IReadOnlyList<string> All =
    [
        "EPTP: 4-level", "EPTP: 5-level", "EPTP: A/D on", "EPTP: A/D off", "EPTP: rejected (VM entry fails)",
        "access: translated (4K page)", "access: translated (2M page)", "access: translated (1G page)", "access: MMIO exit",
        "violation: not present", "violation: read denied", "violation: write denied", "violation: fetch denied",
        "violation: EPT table outside L1 memory",
        "misconfiguration: write without read", "misconfiguration: execute-only unsupported", "misconfiguration: reserved bits",
        "misconfiguration: memory type",
        "5-level EPT: translated", "5-level EPT: violation", "5-level EPT: misconfiguration",
        "EPT A/D: accessed set", "EPT A/D: dirty set",
        "write tracking: store into a walked EPT table", "write tracking: changed entry walked again",
        "roots: switch back to a recent EPTP", "roots: switch to an EPTP not among the last four",
        "roots: access after INVEPT covering the current EPTP",
        "INVEPT: single-context", "INVEPT: all-context", "INVEPT: rejected",
        "slots: created", "slots: deleted", "slots: rejected",
        Unsynced, ResyncedAtInvept, ResyncedAtViolation, NoAccessDropped, StaleUsed, CachedWithoutAccessedDirty,
        Flooded, OrphanZapped,
    ];

    // Situations only a run shows (the impl's unsync events, oracle 2's allowances): heard through NestedEptFamily's observer.
    public const string Unsynced = "unsync: a shadowed leaf EPT table unsynced by an L1 store";
    public const string ResyncedAtInvept = "unsync: pages resynced at INVEPT or the root load after it";
    public const string ResyncedAtViolation = "unsync: the gpa resynced when a violation was reflected";
    public const string NoAccessDropped = "unsync: sync dropped an entry whose rights ANDed to none (RWX=0)";
    public const string StaleUsed = "unsync: stale translation used within the allowance";
    public const string CachedWithoutAccessedDirty = "unsync: a cached mapping used without the walk's A/D writes";

    // The impl's recycling (NestedEptMmu.Flood.cs), heard at the end of every case: a strict case runs the impl once more, alone.
    public const string Flooded = "write flooding: a shadow EPT page zapped";
    public const string OrphanZapped = "write flooding: a child zapped with its last parent";

    /// <summary>What nested-ept-unsync (stale bursts on unsync pages) is expected to reach, the RWX=0 drop included (about 1 case in 5).</summary>
    public static IReadOnlyList<string> ExpectedUnsync { get; } = [Unsynced, ResyncedAtInvept, ResyncedAtViolation, NoAccessDropped, StaleUsed];

    /// <summary>The impl's unsync counters at the end of a case, as situations.</summary>
    internal static void Heard(NestedUnsyncCounters n, Action<string> hit)
    {
        if (n.PagesUnsynced > 0) hit(Unsynced);
        if (n.PagesSyncedAtInvept + n.PagesSyncedAtRootLoad > 0) hit(ResyncedAtInvept);
        if (n.GpasSyncedAtViolation > 0) hit(ResyncedAtViolation);
        if (n.NoAccessEntriesDropped > 0) hit(NoAccessDropped);
    }

    /// <summary>The impl's recycling counters at the end of a case, as situations.</summary>
    internal static void Heard(NestedRecycleCounters r, Action<string> hit)
    {
        if (r.ZappedForFlooding > 0) hit(Flooded);
        if (r.OrphansZapped > 0) hit(OrphanZapped);
    }

    /// <summary>
    /// What the generator is expected to reach in a default campaign: every situation but an RWX=0 entry dropped by a sync
    /// (an execute-only leaf under read-only levels, shadowed, then synced: about 1 in 10,000 cases) and a child zapped with
    /// its flooded parent (about 1 case in 170); both counted, not required.
    /// </summary>
    public static IReadOnlyList<string> Expected { get; } = [.. All.Where(s => s != NoAccessDropped && s != OrphanZapped)];

    public static void Classify(NestedEptCase c, Action<string> hit)
    {
        Spec(c, hit);
        if (c.Config.GvaTlb) NestedEptVpidCoverage.Spec(c, hit);
        // The unsync and gva TLB situations are the impl's and oracle 2's: the case runs once more, in lockstep, heard.
        if (c.Config.Unsync || c.Config.GvaTlb) new NestedEptFamily(hit).Run(c);
        else Impl(c, hit);
    }

    /// <summary>The impl alone over the case's operations (its answers are the differential run's business), for its recycling counters.</summary>
    static void Impl(NestedEptCase c, Action<string> hit)
    {
        var pool = new NativePagePool();
        using var impl = new ImplNestedEngine(c.Config, pool);
        try
        {
            foreach (var op in c.AllOps) impl.Step(op);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { } // the differential run reports it
        Heard(impl.Vm.RecycleCounters, hit);
    }

    static void Spec(NestedEptCase c, Action<string> hit)
    {
        var state = NestedEptState.Create(c.Config.Caps);
        var walkedTables = new HashSet<ulong>();
        var changedEntries = new HashSet<ulong>();
        var recentEptps = new List<ulong>();
        bool invalidatedCurrent = false;
        foreach (var op in c.AllOps)
        {
            var before = state;
            VmResult result;
            try { (state, result) = state.Step(op); }
            catch (ArgumentException) { return; } // the differential run reports what the spec refused
            bool ok = result is not VmResult.Rejected;
            switch (op)
            {
                case NestedEptOp.LoadEptp l when ok:
                    hit(l.Eptp.WalkLength == 5 ? "EPTP: 5-level" : "EPTP: 4-level");
                    hit(l.Eptp.AccessedDirtyEnabled ? "EPTP: A/D on" : "EPTP: A/D off");
                    if (before.Eptp is { } old && old != l.Eptp)
                    {
                        int at = recentEptps.IndexOf(l.Eptp.Raw);
                        hit(at is >= 0 and < 4 ? "roots: switch back to a recent EPTP" : "roots: switch to an EPTP not among the last four");
                        invalidatedCurrent = false;
                    }
                    recentEptps.Remove(l.Eptp.Raw);
                    recentEptps.Insert(0, l.Eptp.Raw);
                    break;
                case NestedEptOp.LoadEptp:
                    hit("EPTP: rejected (VM entry fails)");
                    break;
                case NestedEptOp.Invept i:
                    hit(!ok ? "INVEPT: rejected" : i.Type == InveptType.AllContext ? "INVEPT: all-context" : "INVEPT: single-context");
                    if (ok && state.Eptp is { } cur && (i.Type == InveptType.AllContext || i.Eptp.RootAddress == cur.RootAddress))
                        invalidatedCurrent = true;
                    break;
                case NestedEptOp.CreateSlot:
                    hit(ok ? "slots: created" : "slots: rejected");
                    break;
                case NestedEptOp.DeleteSlot:
                    hit(ok ? "slots: deleted" : "slots: rejected");
                    if (ok) walkedTables.Clear();
                    break;
                case NestedEptOp.L1Store s when ok:
                    if (walkedTables.Contains(s.Gpa >> 12))
                    {
                        hit("write tracking: store into a walked EPT table");
                        changedEntries.Add(s.Gpa & ~7UL);
                    }
                    break;
                case NestedEptOp.L2Access a when ok && before.Eptp is { } eptp:
                    if (invalidatedCurrent) hit("roots: access after INVEPT covering the current EPTP");
                    invalidatedCurrent = false;
                    var walk = EptWalk.Explain(before.Caps, eptp, before.L1Memory, new EptAccess(a.Gpa, a.Type));
                    foreach (var step in walk.Steps)
                    {
                        walkedTables.Add(step.EntryAddress >> 12);
                        if (changedEntries.Remove(step.EntryAddress)) hit("write tracking: changed entry walked again");
                    }
                    Access(walk, result, hit);
                    if (eptp.WalkLength == 5)
                        hit(walk.Result switch
                        {
                            EptResult.Translated => "5-level EPT: translated",
                            EptResult.Violation => "5-level EPT: violation",
                            _ => "5-level EPT: misconfiguration",
                        });
                    break;
                case NestedEptOp.SetL2Paging p:
                    NestedEptL2Coverage.Paging(p, ok, hit);
                    break;
                case NestedEptOp.L2GvaAccess g when ok && before.Eptp is { } current:
                    NestedEptL2Coverage.Access(before, current, g.Access, result, hit);
                    break;
            }
        }
    }

    static void Access(EptExplanation walk, VmResult result, Action<string> hit)
    {
        switch (walk.Result)
        {
            case EptResult.Translated t:
                hit(result is NestedEptResult.MmioExit ? "access: MMIO exit" : $"access: translated ({t.Size.Name()} page)");
                foreach (var u in walk.Updates)
                {
                    if (((u.Before ^ u.After) & EptEntry.Accessed) != 0) hit("EPT A/D: accessed set");
                    if (((u.Before ^ u.After) & EptEntry.Dirty) != 0) hit("EPT A/D: dirty set");
                }
                break;
            case EptResult.Violation v:
                var last = walk.Steps[^1];
                hit(last.Note == "outside L1 memory" ? "violation: EPT table outside L1 memory"
                    : last.Note == "not present" ? "violation: not present"
                    : v.Qualification.DataWrite ? "violation: write denied"
                    : v.Qualification.InstructionFetch ? "violation: fetch denied" : "violation: read denied");
                break;
            case EptResult.Misconfiguration m:
                hit(m.Kind switch
                {
                    EptMisconfigurationKind.WriteWithoutRead => "misconfiguration: write without read",
                    EptMisconfigurationKind.ExecuteOnlyUnsupported => "misconfiguration: execute-only unsupported",
                    EptMisconfigurationKind.ReservedBits => "misconfiguration: reserved bits",
                    _ => "misconfiguration: memory type",
                });
                break;
        }
    }
}
