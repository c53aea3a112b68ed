using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Nested;

/// <summary>The situations of L2's own paging in nested-EPT cases (docs/coverage.md), judged from the spec's 2D walk of each L2 gva access.</summary>
public static class NestedEptL2Coverage
{
    public static readonly IReadOnlyList<string> Situations =
    [
        "L2 paging: 32-bit", "L2 paging: PAE", "L2 paging: 4-level", "L2 paging: 5-level", "L2 paging: off", "L2 paging: VM entry refused",
        "L2 gva: translated", "L2 gva: MMIO exit", "L2 gva: #PF for L2", "L2 gva: #GP for L2",
        "L2 gva: EPT violation on a paging-structure read", "L2 gva: EPT violation on the final access",
        "L2 gva: EPT violation on an L2 A/D write", "L2 gva: EPT misconfiguration",
        "L2 gva: EPT D set by a paging-structure access", "L2 gva: A/D bits set in L2's tables",
    ];

    /// <summary>The nested family's situations: the nested-ept ones, then these.</summary>
    public static readonly IReadOnlyList<string> Family = [.. NestedEptCoverage.All, .. Situations, .. NestedEptVpidCoverage.Situations];

    /// <summary>What `nested-ept-l2` is expected to reach: the EPT basics it shares with nested-ept, and every L2 situation.</summary>
    public static IReadOnlyList<string> Expected { get; } =
    [
        "EPTP: 4-level", "EPTP: 5-level", "EPTP: A/D on", "EPTP: A/D off", "access: translated (4K page)", "violation: not present",
        "INVEPT: single-context", "INVEPT: all-context", .. Situations,
    ];

    public static void Paging(NestedEptOp.SetL2Paging p, bool ok, Action<string> hit) =>
        hit(!ok ? "L2 paging: VM entry refused" : p.Cpu?.Controls.Mode switch
        {
            null => "L2 paging: off",
            PagingMode.Bits32 => "L2 paging: 32-bit",
            PagingMode.Pae => "L2 paging: PAE",
            PagingMode.Long4 => "L2 paging: 4-level",
            _ => "L2 paging: 5-level",
        });

    /// <summary>An accepted L2 gva access, from the spec's state before it.</summary>
    public static void Access(NestedEptState before, EptPointer eptp, Access access, VmResult result, Action<string> hit)
    {
        var walk = NestedWalk.Explain(before.Caps, eptp, before.L2Cpu, before.L1Memory, access);
        switch (result)
        {
            case NestedEptResult.Translated: hit("L2 gva: translated"); break;
            case NestedEptResult.MmioExit: hit("L2 gva: MMIO exit"); break;
            case NestedEptResult.GuestFault { Fault: WalkResult.PageFault }: hit("L2 gva: #PF for L2"); break;
            case NestedEptResult.GuestFault: hit("L2 gva: #GP for L2"); break;
            case NestedEptResult.EptExit { Exit: EptResult.Misconfiguration }: hit("L2 gva: EPT misconfiguration"); break;
            case NestedEptResult.EptExit when walk.EptWalks.Length > 0:
                hit(walk.EptWalks[^1].Purpose switch
                {
                    NestedEptPurpose.GuestEntryRead => "L2 gva: EPT violation on a paging-structure read",
                    NestedEptPurpose.FinalAccess => "L2 gva: EPT violation on the final access",
                    _ => "L2 gva: EPT violation on an L2 A/D write",
                });
                break;
        }
        if (walk.EptWalks.Any(w => w.Purpose == NestedEptPurpose.GuestEntryRead && w.Walk.Updates.Any(u => ((u.Before ^ u.After) & EptEntry.Dirty) != 0)))
            hit("L2 gva: EPT D set by a paging-structure access");
        if (walk.GuestUpdates.Length > 0) hit("L2 gva: A/D bits set in L2's tables");
    }
}

/// <summary>Oracle 2 for an L2 gva access whose results differ: what <see cref="EptTlb"/> says of the impl's answer.</summary>
public static class NestedEptL2Oracle
{
    public static string Judge(EptTlb layer, CpuState l2Cpu, Access access, VmResult result)
    {
        NestedResult? observed = result switch
        {
            // Only the gpas matter to the comparison (EptTlb's Same): the rest of the EPT translation is filler.
            NestedEptResult.Translated t => new NestedResult.Translated(t.L2Gpa, null, null, new EptResult.Translated(t.L1Gpa, PageSize.Size4K, EptRights.All, EptMemoryType.WriteBack, false)),
            NestedEptResult.MmioExit m => null,
            NestedEptResult.GuestFault f => new NestedResult.GuestFault(f.Fault),
            NestedEptResult.EptExit e => new NestedResult.EptExit(e.Exit),
            _ => null,
        };
        if (observed is null) return "not judged (an MMIO exit or a rejection)";
        return layer.Violation(l2Cpu, access, observed) is { } why
            ? $"not allowed: {why}"
            : "allowed as a stale translation since the last invalidation (SDM Vol. 3C §29.4), though this MMU promises none";
    }
}
