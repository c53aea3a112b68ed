using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using ImplMode = MmuSpec.Impl.Paging.PagingMode;

namespace MmuSpec.Harness.Images;

/// <summary>
/// Runs an access on the impl alone (<see cref="GuestVcpu.TryBoot"/>, then the traced
/// <see cref="GuestVcpu.Access(ulong, Impl.Paging.AccessType, Impl.Paging.Privilege, ref AccessTrace)"/>):
/// the impl loads CR3 (PAE: checks and loads the PDPTEs), walks and sets A/D itself; its trace names
/// the entries it read in walk order with their values, which gives the changed entries.
/// </summary>
public static class ImplWalk
{
    /// <summary>Most host memory the impl may allocate for a scenario's memslots (the spec needs none).</summary>
    public const ulong MaxPoolBytes = 1UL << 30;

    /// <summary>Walks a scenario with listed memory on the impl over fresh native pages.</summary>
    public static WalkReport Run(Scenario s)
    {
        using var pool = new NativePagePool();
        using var walker = new ImplWalker(pool);
        return walker.Run(s);
    }

    /// <summary>
    /// Walks on the impl over <paramref name="memory"/>, which must hold the scenario's memory (an
    /// image's copy-on-write mapping). The walk's A/D writes stay in <paramref name="memory"/>.
    /// </summary>
    public static WalkReport Run(Scenario s, GuestPhysicalMemory memory)
    {
        var access = s.Access ?? throw new InputException("no access to walk: give \"access\": {\"gva\": ...} in the scenario, or --gva");
        var vcpu = Boot(s, memory);
        var trace = default(AccessTrace);
        var outcome = vcpu.Access(access.Gva, PagingVocabulary.ToImpl(access.Type), PagingVocabulary.ToImpl(access.Privilege), ref trace);
        if (s.Image is { } image && trace.UnbackedGpa is { } missing)
            throw new InputException(Scenario.TooShort(image, PagingLevels.EntryName(s.Mode, LevelAt(s.Mode, trace.Count)), missing));
        return new WalkReport("impl", s, access, CpuOf(s, vcpu), PagingVocabulary.FromImpl(outcome), Changes(memory, trace), null);
    }

    /// <summary>
    /// MOV CR3 on the impl. A CR3 it refuses is bad input, in the words <see cref="Scenario.Boot"/>
    /// uses for the spec, so both engines answer a bad line the same way.
    /// </summary>
    static GuestVcpu Boot(Scenario s, GuestPhysicalMemory memory)
    {
        L1Ept.RefuseL1Walk(s);
        var vcpu = GuestVcpu.TryBoot(memory, PagingVocabulary.ToImpl(s.Controls), s.Cr3, out var error);
        if (vcpu is not null) return vcpu;
        ulong pdpt = s.Cr3 & Bits.Range(31, 5);
        throw new InputException(error.Fault switch
        {
            Cr3Fault.PdptUnbacked when s.Image is { } image => Scenario.TooShort(image, "PDPT", pdpt),
            Cr3Fault.PdptUnbacked => $"cr3 {Hex.Format(s.Cr3)}: the PDPT at gpa {Hex.Format(pdpt)} is outside guest memory, so loading CR3 would #GP",
            Cr3Fault.PdpteReservedBits => Scenario.PdpteReservedMessage(s.Cr3, error.PdpteIndex, error.PdpteGpa, error.Pdpte, error.ReservedBits),
            _ => $"cr3 {Hex.Format(s.Cr3)} cannot be loaded: #GP, {GpReason.Cr3ReservedBits.Describe()}",
        });
    }

    /// <summary>The level of the <paramref name="position"/>-th entry a walk reads from memory (0 = the first).</summary>
    static int LevelAt(Spec.Paging.PagingMode mode, int position) =>
        (mode == Spec.Paging.PagingMode.Pae ? 2 : mode.RootLevel()) - position;

    static CpuState CpuOf(Scenario s, GuestVcpu vcpu) =>
        new(s.Controls, vcpu.Cr3, vcpu.Controls.Mode == ImplMode.Pae ? Enumerable.Range(0, 4).Select(vcpu.Pdpte) : null);

    /// <summary>
    /// The entries whose value the walk changed, once each, in the order the walk first read them:
    /// the value it read against the value in memory now. Every entry read is compared, not only those a
    /// translation used: a faulting walk must change nothing, and a stray write shows here.
    /// </summary>
    static ImmutableArray<EntryUpdate> Changes(GuestPhysicalMemory memory, in AccessTrace trace)
    {
        var changes = ImmutableArray.CreateBuilder<EntryUpdate>(trace.Count);
        for (int i = 0; i < trace.Count; i++)
        {
            ulong gpa = trace[i], before = trace.Value(i);
            if (changes.Any(c => c.Gpa == gpa)) continue;    // a table that maps itself: the first read counts
            ulong after = Read(memory, gpa, trace.EntryBytes);
            if (after != before) changes.Add(new EntryUpdate(gpa, before, after));
        }
        return changes.ToImmutable();
    }

    static ulong Read(GuestPhysicalMemory memory, ulong gpa, int entryBytes)
    {
        if (entryBytes == 8 ? memory.TryRead64(gpa, out ulong value) : TryRead32(memory, gpa, out value)) return value;
        throw new InvalidOperationException($"the walk read {Hex.Format(gpa)}, but no memslot backs it now");
    }

    static bool TryRead32(GuestPhysicalMemory memory, ulong gpa, out ulong value)
    {
        bool read = memory.TryRead32(gpa, out uint narrow);
        value = narrow;
        return read;
    }
}

/// <summary>
/// The impl's engine for many scenarios with listed memory (batch mode): native memory is allocated
/// once per memslot layout and kept while the next scenario has the same memslots; each walk writes
/// the scenario's words, and afterwards zeroes them again (every A/D update lands in one of them: the
/// walk only updates entries it used, and an entry in use is present, so the scenario wrote it).
/// Disposing it returns every page to the pool.
/// </summary>
public sealed class ImplWalker(NativePagePool pool) : IDisposable
{
    readonly GuestPhysicalMemory memory = new(pool);

    public WalkReport Run(Scenario s)
    {
        if (s.Image is not null) throw new InvalidOperationException("an image scenario needs the image mapped for the impl: use ImplWalk.Run(scenario, memory)");
        UseSlots(s.Slots);
        try
        {
            foreach (var w in s.Memory) Write(w.Gpa, w.Value, s.EntryBytes);
            return ImplWalk.Run(s, memory);
        }
        finally
        {
            foreach (var w in s.Memory) Write(w.Gpa, 0, s.EntryBytes);
        }
    }

    /// <summary>Makes guest memory exactly <paramref name="slots"/>, keeping the pages of every slot that stays.</summary>
    void UseSlots(ImmutableArray<Memslot> slots)
    {
        if (SameLayout(slots)) return;
        ulong bytes = slots.Aggregate(0UL, (sum, slot) => sum + (slot.Pages << 12));
        if (bytes > ImplWalk.MaxPoolBytes)
            throw new InputException($"memslots total {Hex.Size(bytes)}: the impl engine backs them with host memory and allows at most {Hex.Size(ImplWalk.MaxPoolBytes)}; give smaller memslots");
        var wanted = slots.Select(n => (n.BaseGfn, n.Pages)).ToHashSet();
        foreach (var old in memory.Slots.Where(c => !wanted.Contains((c.BaseGfn, c.Pages))).ToList()) memory.RemoveSlot(old.BaseGfn);
        var kept = memory.Slots.Select(c => (c.BaseGfn, c.Pages)).ToHashSet();
        foreach (var slot in slots.Where(n => !kept.Contains((n.BaseGfn, n.Pages)))) memory.AddSlot(slot.BaseGfn, slot.Pages);
    }

    /// <summary>The common case, checked without allocating: the same slots as the previous line, in the same order.</summary>
    bool SameLayout(ImmutableArray<Memslot> slots)
    {
        var current = memory.Slots;
        if (current.Count != slots.Length) return false;
        for (int i = 0; i < slots.Length; i++)
            if (current[i].BaseGfn != slots[i].BaseGfn || current[i].Pages != slots[i].Pages) return false;
        return true;
    }

    void Write(ulong gpa, ulong value, int entryBytes)
    {
        bool written = entryBytes == 8 ? memory.TryWrite64(gpa, value) : memory.TryWrite32(gpa, (uint)value);
        if (!written) throw new InvalidOperationException($"memory {Hex.Format(gpa)} is outside the memslots the scenario was checked against");
    }

    public void Dispose() => memory.Dispose();
}
