using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Ept;

/// <summary>
/// The outcome of an L2 access under L1's EPT: a translation through both dimensions, a fault L2's own
/// tables raise (#PF or #GP, delivered to L2), or an EPT VM exit to L1 (violation or misconfiguration).
/// A sealed hierarchy; F# matches it with <c>NestedTranslated | NestedGuestFault | NestedEptExit</c>.
/// </summary>
public abstract record NestedResult
{
    private NestedResult() { }

    /// <summary>L2's gva reaches <paramref name="L2Gpa"/> through L2's tables (a page of <paramref name="GuestSize"/>, null with paging off) and then <see cref="EptResult.Translated.L1Gpa"/> through L1's EPT.</summary>
    public sealed record Translated(ulong L2Gpa, PageSize? GuestSize, TranslationRights? GuestRights, EptResult.Translated Ept) : NestedResult
    {
        public ulong L1Gpa => Ept.L1Gpa;
        public override string ToString() =>
            $"translated to L2 gpa {Bits.Hex(L2Gpa)}{(GuestSize is { } s ? $" ({s.Name()} page, {GuestRights})" : " (paging off)")}, then {Ept}";
    }

    /// <summary>L2's own walk faults (<see cref="WalkResult.PageFault"/> or <see cref="WalkResult.GeneralProtection"/>): an exception for L2, no VM exit.</summary>
    public sealed record GuestFault(WalkResult Result) : NestedResult
    {
        public override string ToString() => $"L2 {Result}";
    }

    /// <summary>An EPT walk made for this access ends in a VM exit to L1 (<see cref="EptResult.Violation"/> or <see cref="EptResult.Misconfiguration"/>).</summary>
    public sealed record EptExit(EptResult Exit) : NestedResult
    {
        public override string ToString() => $"VM exit to L1: {Exit}";
    }

    public bool IsTranslated => this is Translated;
}

/// <summary>Why the 2D walk translated a gpa through L1's EPT.</summary>
public enum NestedEptPurpose
{
    /// <summary>To read an entry of L2's paging structures.</summary>
    GuestEntryRead,
    /// <summary>To access the final L2 gpa.</summary>
    FinalAccess,
    /// <summary>To write an A or D bit into an entry of L2's paging structures.</summary>
    GuestAccessedDirtyUpdate,
}

/// <summary>One EPT walk of a 2D walk and why it was made.</summary>
public sealed record NestedEptWalk(NestedEptPurpose Purpose, EptExplanation Walk)
{
    public override string ToString() => $"{Purpose}: {Walk}";
}

/// <summary>A 2D walk with everything it read, decided and wrote, in order.</summary>
/// <param name="GuestWalk">L2's own walk (null with L2 paging off); its reads were made through <paramref name="EptWalks"/>.</param>
/// <param name="GuestUpdates">The A/D bits written into L2's entries, at their L1 gpas.</param>
public sealed record NestedExplanation(
    Access Access,
    EptPointer Eptp,
    WalkExplanation? GuestWalk,
    ImmutableArray<NestedEptWalk> EptWalks,
    NestedResult Result,
    string Rule,
    ImmutableArray<EntryUpdate> GuestUpdates,
    GuestMemory L1MemoryAfter)
{
    public override string ToString()
    {
        var lines = new List<string> { $"L2 {Access} through {Eptp}" };
        var reads = EptWalks.Where(w => w.Purpose == NestedEptPurpose.GuestEntryRead).GetEnumerator();
        if (GuestWalk is null) lines.Add("  L2 paging is off: the gva is the L2 gpa");
        else
            foreach (var step in GuestWalk.Steps)
            {
                lines.Add("  L2 " + step);
                if (step.EntryGpa is not null && reads.MoveNext())
                    lines.AddRange(reads.Current.Walk.ToString().Split(Environment.NewLine).Select(l => "      " + l));
            }
        foreach (var w in EptWalks.Where(w => w.Purpose != NestedEptPurpose.GuestEntryRead))
        {
            lines.Add(w.Purpose == NestedEptPurpose.FinalAccess ? "  final access:" : "  L2 A/D update:");
            lines.AddRange(w.Walk.ToString().Split(Environment.NewLine).Select(l => "      " + l));
        }
        lines.AddRange(GuestUpdates.Select(u => "  L2 A/D at L1 gpa " + u));
        lines.Add($"  => {Result}: {Rule}");
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>What a 2D walk returns: its outcome and L1's memory afterwards (A/D bits in L2's tables and in L1's EPT).</summary>
public sealed record NestedTranslation(NestedResult Result, GuestMemory L1Memory);

/// <summary>
/// Two-dimensional translation for L2 (SDM Vol. 3C §29.3.3.3, prioritization of EPT misconfigurations and violations): L2's gva
/// goes through L2's page tables (<see cref="PageWalk"/>, unchanged) and every entry read is itself a
/// guest-physical access, translated through L1's EPT; then the final gpa is translated through the EPT with the
/// access's own kind. In order:
/// (1) each L2 entry read is an EPT access to a paging-structure entry (a read; a write with EPT A/D, §29.3.4);
/// a VM exit there ends the walk, with bit 7 of the exit qualification set and bit 8 clear;
/// (2) L2's own rules (not present, reserved bits, rights) may end it with a fault for L2;
/// (3) the final gpa is translated (bits 7 and 8 set on a violation);
/// (4) the A/D bits L2's walk sets are written into L1's memory, each write an EPT write to a paging-structure
/// entry. The order of (3) and (4), and writing L2's A/D only when the rest succeeded, follow KVM's
/// walk_addr_generic (the SDM does not order them). An EPT walk that ends in a VM exit writes nothing, the ones
/// before it keep their EPT A/D bits.
/// </summary>
public static class NestedWalk
{
    public static NestedTranslation Translate(EptCapabilities caps, EptPointer eptp, CpuState? l2Cpu, GuestMemory l1Memory, Access access)
    {
        var e = Explain(caps, eptp, l2Cpu, l1Memory, access);
        return new NestedTranslation(e.Result, e.L1MemoryAfter);
    }

    /// <summary>The 2D walk with its words. <paramref name="l2Cpu"/> null means L2 runs with paging off (gva = gpa).</summary>
    public static NestedExplanation Explain(EptCapabilities caps, EptPointer eptp, CpuState? l2Cpu, GuestMemory l1Memory, Access access)
    {
        if (eptp.Problem(caps) is { } problem)
            throw new ArgumentException($"invalid {eptp}: {problem.Describe()}", nameof(eptp));
        int gpaBits = EptWalk.AddressBits(eptp.WalkLength);
        var walks = ImmutableArray.CreateBuilder<NestedEptWalk>();
        var memory = l1Memory;

        NestedExplanation End(WalkExplanation? guest, NestedResult result, string rule, ImmutableArray<EntryUpdate> updates) =>
            new(access, eptp, guest, walks.ToImmutable(), result, rule, updates, memory);
        NestedExplanation Exit(WalkExplanation? guest, EptExplanation walk, string where) =>
            End(guest, new NestedResult.EptExit(walk.Result), $"{where}: {walk.Rule}", ImmutableArray<EntryUpdate>.Empty);

        if (l2Cpu is null)
        {
            // Paging off: the linear address is the gpa (SDM §29.3.3.3). Model: it counts as a supervisor-mode address for mode-based execute control.
            if (access.Gva >> gpaBits != 0)
                throw new ArgumentOutOfRangeException(nameof(access), access.Gva, $"a {eptp.WalkLength}-level EPT translates {gpaBits}-bit guest-physical addresses");
            var direct = EptWalk.Explain(caps, eptp, memory, new EptAccess(access.Gva, access.Type, false, false, access.Gva));
            walks.Add(new NestedEptWalk(NestedEptPurpose.FinalAccess, direct));
            if (direct.Result is not EptResult.Translated t) return Exit(null, direct, "the access (L2 paging off)");
            memory = direct.MemoryAfter;
            return End(null, new NestedResult.Translated(access.Gva, null, null, t), direct.Rule, ImmutableArray<EntryUpdate>.Empty);
        }

        var controls = l2Cpu.Controls;
        if (controls.MaxPhyAddr > gpaBits)
            throw new ArgumentException($"L2's MAXPHYADDR {controls.MaxPhyAddr} is wider than the {gpaBits} bits a {eptp.WalkLength}-level EPT translates", nameof(l2Cpu));
        int entryBytes = controls.Mode.EntryBytes();
        EptAccess EntryAccess(ulong gpa, AccessType type) => new(gpa, type, false, true, access.Gva);

        // (1), (2): L2's walk reads through a view of L1's memory as it was before this walk; each read it made is then
        // translated again, in order, with the EPT A/D writes. EPT A/D writes cannot change an EPT walk's outcome (bits 8
        // and 9 are never reserved), and where an EPT table shares a page with L2's tables they land in bits L2's walk
        // ignores, so the view reads what the processor would.
        var view = GuestMemory.FromSlots([new Memslot(0, 1UL << (controls.MaxPhyAddr - Memslot.PageShift))],
            new EptView(caps, eptp, l1Memory, gpa => EntryAccess(gpa, AccessType.Read), controls.MaxPhyAddr));
        var guest = PageWalk.Explain(l2Cpu, view, access);
        foreach (var step in guest.Steps)
        {
            if (step.EntryGpa is not { } entryGpa) continue;   // PAE's PDPTE registers were loaded at MOV CR3
            var read = EptWalk.Explain(caps, eptp, memory, EntryAccess(entryGpa, AccessType.Read));
            walks.Add(new NestedEptWalk(NestedEptPurpose.GuestEntryRead, read));
            if (read.Result is not EptResult.Translated t)
                return Exit(guest, read, $"reading the L2 {step.EntryName} at L2 gpa {Bits.Hex(entryGpa)}");
            memory = read.MemoryAfter;
            if (!memory.IsBacked(t.L1Gpa, entryBytes))
                return End(guest, new NestedResult.GuestFault(guest.Result),
                    $"the L2 {step.EntryName} is at L1 gpa {Bits.Hex(t.L1Gpa)}, outside L1 memory (KVM: not present)", ImmutableArray<EntryUpdate>.Empty);
        }
        if (guest.Result is not WalkResult.Translated g)
            return End(guest, new NestedResult.GuestFault(guest.Result), guest.Rule, ImmutableArray<EntryUpdate>.Empty);

        // (3) The final access, from a user-mode linear address when U/S is set at every level of L2's translation (§4.6).
        var final = EptWalk.Explain(caps, eptp, memory, new EptAccess(g.Gpa, access.Type, g.Rights.User, false, access.Gva));
        walks.Add(new NestedEptWalk(NestedEptPurpose.FinalAccess, final));
        if (final.Result is not EptResult.Translated f) return Exit(guest, final, "the final access");
        memory = final.MemoryAfter;

        // (4) L2's A/D bits (§4.8), each an EPT write to a guest paging-structure entry.
        var written = ImmutableArray.CreateBuilder<EntryUpdate>();
        foreach (var update in guest.Updates)
        {
            var write = EptWalk.Explain(caps, eptp, memory, EntryAccess(update.Gpa, AccessType.Write));
            walks.Add(new NestedEptWalk(NestedEptPurpose.GuestAccessedDirtyUpdate, write));
            if (write.Result is not EptResult.Translated w)
                return End(guest, new NestedResult.EptExit(write.Result), $"writing L2's A/D bits at L2 gpa {Bits.Hex(update.Gpa)}: {write.Rule}", written.ToImmutable());
            memory = write.MemoryAfter;
            if (memory.Read(w.L1Gpa, entryBytes) is not { } before) continue;   // outside L1 memory: the write is dropped
            ulong after = before | (update.After & ~update.Before);
            if (after == before) continue;
            memory = memory.Write(w.L1Gpa, after, entryBytes);
            written.Add(new EntryUpdate(w.L1Gpa, before, after));
        }
        return End(guest, new NestedResult.Translated(g.Gpa, g.Size, g.Rights, f), $"{guest.Rule}; {final.Rule}", written.ToImmutable());
    }

    /// <summary>
    /// L2's guest-physical memory as L2's page walk reads it: each qword is read through L1's EPT from L1's memory.
    /// A gpa the EPT does not translate, or that lands outside L1's memory, reads as 0 (a not-present entry); the
    /// walk over the view stops there, and <see cref="Explain"/> reports the EPT exit (or KVM's not-present fault).
    /// </summary>
    sealed class EptView(EptCapabilities caps, EptPointer eptp, GuestMemory l1Memory, Func<ulong, EptAccess> access, int maxPhyAddr) : IPhysicalMemoryImage
    {
        public ulong Length => 1UL << maxPhyAddr;

        public ulong ReadQword(ulong gpa) =>
            EptWalk.Explain(caps, eptp, l1Memory, access(gpa)).Result is EptResult.Translated t ? l1Memory.Read64(t.L1Gpa) ?? 0 : 0;
    }
}
