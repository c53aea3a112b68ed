using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// The TDP family's comparisons and checks (<see cref="TdpFamily"/> runs them in lock step). Oracle 1:
/// equal results and equal abstract state after every step. Oracle 2: every mapping served agrees
/// with the memslots of that moment. TLB flushes: the impl's flushes of every step cover what the
/// spec says the step must flush (<see cref="TdpTlb.MustFlush"/>). After every step the impl holds
/// exactly as many table pages as the model has tables (none unlinked and kept); finally every page
/// must go back to the pool when the VM is destroyed.
/// </summary>
public static class TdpDiff
{
    /// <summary>How every line of a missed-flush report starts (the replay trace labels such a step by it).</summary>
    public const string FlushLinePrefix = "TLB flush:";

    /// <summary>
    /// The flush check: every gfn the step must flush is in a range the impl flushed, or the impl
    /// flushed everything (<paramref name="flushed"/> null). Empty when it holds; else lines naming the
    /// first gfns missed and why they needed a flush, then both sides' lists.
    /// </summary>
    public static ImmutableArray<string> MissedFlushes(FlushObligation obligation, GfnRanges? flushed)
    {
        if (flushed is null || obligation.IsEmpty) return [];
        var missed = obligation.Gfns.Except(flushed);
        if (missed.IsEmpty) return [];
        var lines = ImmutableArray.CreateBuilder<string>();
        foreach (var range in missed.Ranges.Take(3))
            lines.Add($"{FlushLinePrefix} impl did not flush gfns {range} that the step unmapped, narrowed or unlinked ({obligation.DutyFor(range)?.Why ?? "?"})");
        if (missed.Ranges.Length > 3) lines.Add($"{FlushLinePrefix} ... and {missed.Ranges.Length - 3} more ranges");
        lines.Add($"{FlushLinePrefix} spec: must flush {obligation.Gfns}");
        foreach (var duty in obligation.Duties.Take(6)) lines.Add($"{FlushLinePrefix}   {duty}");
        if (obligation.Duties.Length > 6) lines.Add($"{FlushLinePrefix}   ... and {obligation.Duties.Length - 6} more");
        lines.Add($"{FlushLinePrefix} impl: flushed {(flushed.IsEmpty ? "nothing" : flushed.ToString())}");
        return lines.ToImmutable();
    }

    /// <summary><see cref="ImplTdpEngine.Matches"/>, false when reading the impl throws (the view then says so).</summary>
    public static bool SafeMatches(ImplTdpEngine impl, TdpState spec, bool fullMemory = false)
    {
        try { return impl.Matches(spec, fullMemory); } catch { return false; }
    }

    public static TdpState? SafeView(ImplTdpEngine impl)
    {
        try { return impl.View(); } catch { return null; }
    }

    /// <summary>
    /// Results compare in full, except a rejection's reason (each side words it its own way) and a
    /// guest #GP's reason (the impl, like hardware, reports none).
    /// </summary>
    public static string Describe(VmResult r) => r switch
    {
        VmResult.Rejected => "rejected",
        TdpResult.GuestFault { Fault: WalkResult.GeneralProtection } => "guest #GP",
        _ => r.ToString()!,
    };

    /// <summary>What <see cref="Describe"/> leaves out, blanked: the structural comparison compares the rest.</summary>
    public static VmResult Comparable(VmResult r) => r switch
    {
        VmResult.Rejected => NoReason,
        TdpResult.GuestFault { Fault: WalkResult.GeneralProtection } => GuestGp,
        _ => r,
    };
    static readonly VmResult NoReason = new VmResult.Rejected(""), GuestGp = new TdpResult.GuestFault(new WalkResult.GeneralProtection(default));

    /// <summary>
    /// Oracle 2, against the memslots before the access: a mapping is served only for a gfn in a
    /// slot, at that slot's host frame for the gfn, and never for a write to a read-only slot.
    /// </summary>
    public static string? ArchitectureViolation(TdpState before, TdpOp op, VmResult result)
    {
        if (result is not TdpResult.Mapped m) return null;
        ulong gpa;
        AccessType type;
        switch (op)
        {
            case TdpOp.AccessGpa a: (gpa, type) = (a.Gpa, a.Type); break;
            case TdpOp.GuestStore g: (gpa, type) = (g.Gpa, AccessType.Write); break;
            case TdpOp.GuestAccess { Access: var access }:
                // The guest page tables decide the gpa: the walk over guest memory as it was
                // before the access (A/D updates do not change where it goes).
                if (before.GuestCpu is null) { (gpa, type) = (access.Gva, access.Type); break; }
                if (PageWalk.Translate(before.GuestCpu, before.GuestMemoryView(), access).Result is not WalkResult.Translated t)
                    return "the guest's own page tables do not translate this access, yet it was mapped";
                (gpa, type) = (t.Gpa, access.Type);
                break;
            default: return null;
        }
        ulong gfn = (gpa >> 12) & ~before.Config.DirectBits;
        var slot = before.Slots.Values.FirstOrDefault(s => s.Contains(gfn));
        if (slot is null) return $"gfn {Bits.Hex(gfn)} is in no memslot, yet the access was mapped";
        if (type == AccessType.Write && slot.ReadOnly) return $"a write to read-only {slot} was mapped";
        ulong expected = (before.HostFrame(slot, gfn) << 12) | (gpa & 0xFFF);   // the frame backing it now (MMU notifiers)
        return m.Hpa == expected ? null : $"gfn {Bits.Hex(gfn)} should reach hpa {Bits.Hex(expected)} through {slot}, got {Bits.Hex(m.Hpa)}";
    }

    /// <summary>Human-readable differences between the spec's state and the impl's, empty when equal.</summary>
    public static ImmutableArray<string> Differences(TdpState spec, TdpState? impl, int max = 12)
    {
        if (impl is null) return ["the impl's state could not be read"];
        // The common case in one linear compare: equal states (Equals is stricter than every line below) differ nowhere.
        if (spec.Equals(impl)) return [];
        var d = ImmutableArray.CreateBuilder<string>();
        if (!spec.Notifier.Equals(impl.Notifier)) d.Add($"host notifier: spec {spec.Notifier} / impl {impl.Notifier}");
        if (spec.MaxPageSize != impl.MaxPageSize) d.Add($"max page size: spec {spec.MaxPageSize.Name()} / impl {impl.MaxPageSize.Name()}");
        if (!Equals(spec.DirectRoot, impl.DirectRoot)) d.Add($"direct root: spec {spec.DirectRoot?.ToString() ?? "-"} / impl {impl.DirectRoot?.ToString() ?? "-"}");
        if (!Equals(spec.MirrorRoot, impl.MirrorRoot)) d.Add($"mirror root: spec {spec.MirrorRoot?.ToString() ?? "-"} / impl {impl.MirrorRoot?.ToString() ?? "-"}");
        if (!Equals(spec.GuestCpu, impl.GuestCpu))
            d.Add($"guest paging: spec {spec.GuestCpu?.ToString() ?? "off"} / impl {impl.GuestCpu?.ToString() ?? "off"}");
        foreach (var (hpa, sv, iv) in SortedMerge.Outer(spec.HostMemory, impl.HostMemory))
        {
            if (sv == iv) continue;
            if (d.Count >= max) { d.Add("..."); return d.ToImmutable(); }
            d.Add($"host memory [{Bits.Hex(hpa)}]: spec {Bits.Hex(sv)} / impl {Bits.Hex(iv)}");
        }
        foreach (int id in spec.Slots.Keys.Union(impl.Slots.Keys).Order())
        {
            var s = spec.Slots.GetValueOrDefault(id); var i = impl.Slots.GetValueOrDefault(id);
            if (!Equals(s, i)) d.Add($"slot {id}: spec {s?.ToString() ?? "-"} / impl {i?.ToString() ?? "-"}");
            var sb = spec.DirtyBitmaps.GetValueOrDefault(id); var ib = impl.DirtyBitmaps.GetValueOrDefault(id);
            if (!(sb ?? []).SetEquals(ib ?? []))
                d.Add($"dirty bitmap of slot {id}: spec [{string.Join(", ", (sb ?? []).Select(Bits.Hex))}] / impl [{string.Join(", ", (ib ?? []).Select(Bits.Hex))}]");
        }
        foreach (var key in spec.Pages.Keys.Union(impl.Pages.Keys).Order())
        {
            if (d.Count >= max) { d.Add("..."); break; }
            bool inSpec = spec.Pages.TryGetValue(key, out var sp), inImpl = impl.Pages.TryGetValue(key, out var ip);
            if (!inSpec) { d.Add($"page {key}: only in impl ({ip!.Entries.Count} entries)"); continue; }
            if (!inImpl) { d.Add($"page {key}: only in spec ({sp!.Entries.Count} entries)"); continue; }
            foreach (var (index, se, ie) in SortedMerge.Outer(sp!.Entries, ip!.Entries))
            {
                if (!Equals(se, ie)) d.Add($"page {key} [{index}]: spec {se?.ToString() ?? "-"} / impl {ie?.ToString() ?? "-"}");
            }
        }
        return d.ToImmutable();
    }
}
