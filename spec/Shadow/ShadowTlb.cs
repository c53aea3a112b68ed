using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

/// <summary>Guest memory at one moment: the memslots and the host memory behind them.</summary>
public sealed record MemorySnapshot(ImmutableSortedDictionary<int, HostMemslot> Slots, ImmutableSortedDictionary<ulong, ulong> HostMemory)
{
    GuestMemory? _view;

    /// <summary>The guest-physical view the guest's walk reads (built once).</summary>
    public GuestMemory View => _view ??= SlotMemory.View(Slots, HostMemory);

    public static MemorySnapshot Of(ShadowState state) => new(state.Slots, state.HostMemory);

    public bool SameContents(ShadowState state) => Slots.SameEntries(state.Slots) && HostMemory.SameEntries(state.HostMemory);
}

/// <summary>
/// The architecture layer for shadow paging (docs/shadow-model.md, "Oracle 2"): which translations a
/// guest may still observe. A TLB may hold, for a 4 KiB page v in PCID p, any translation the guest's
/// tables gave for v at any moment since the last flush of p and since the last invalidation of v in
/// p, and nothing older. The layer keeps guest memory after every change since the last flush of every
/// PCID, and for each PCID (and each invalidated page) where its allowed memories start; it judges an
/// access's result by walking the guest's tables over each memory still allowed for its page.
/// </summary>
/// <param name="Memories">Guest memory after every change since the last flush of all PCIDs, oldest first.</param>
/// <param name="FlushedAt">For a PCID flushed since then: the index of its first allowed memory.</param>
/// <param name="InvalidatedAt">For a page invalidated in one PCID since then (INVPCID type 0, a #PF): the index of the first memory still allowed.</param>
/// <param name="InvalidatedEverywhereAt">For a page invalidated in every PCID since then (INVLPG): the index of the first memory still allowed.</param>
public sealed record ShadowTlb(
    ImmutableList<MemorySnapshot> Memories,
    ImmutableSortedDictionary<int, int> FlushedAt,
    ImmutableSortedDictionary<(int Pcid, ulong Page), int> InvalidatedAt,
    ImmutableSortedDictionary<ulong, int> InvalidatedEverywhereAt)
{
    public static ShadowTlb Start(ShadowState state) =>
        new([MemorySnapshot.Of(state)], ImmutableSortedDictionary<int, int>.Empty,
            ImmutableSortedDictionary<(int, ulong), int>.Empty, ImmutableSortedDictionary<ulong, int>.Empty);

    /// <summary>
    /// Why the architecture does not allow <paramref name="result"/> of <paramref name="op"/>, or null
    /// if it does. Call before <see cref="Record"/>, with the state after the operation.
    /// </summary>
    public string? Violation(ShadowOp op, VmResult result, ShadowState after)
    {
        if (op is not ShadowOp.GuestAccess { Access: var access } || result is VmResult.Rejected) return null;
        if (after.GuestCpu is not { } cpu) return "a guest access was served with paging off";

        bool write = access.Type == AccessType.Write;
        ulong gpa = result switch
        {
            ShadowResult.Translated t => t.Gpa,
            ShadowResult.MmioExit m => m.Gpa,
            _ => 0,
        };
        var slot = SlotMemory.SlotOf(after.Slots, gpa >> 12);
        switch (result)
        {
            case ShadowResult.Translated t when slot is null:
                return $"gpa {Bits.Hex(t.Gpa)} is in no memslot, yet it was mapped at hpa {Bits.Hex(t.Hpa)}";
            case ShadowResult.Translated t when t.Hpa != ((slot.HostPfn(t.Gpa >> 12) << 12) | (t.Gpa & 0xFFF)):
                return $"gpa {Bits.Hex(t.Gpa)} was mapped at hpa {Bits.Hex(t.Hpa)}, but slot {slot.Id} backs it at {Bits.Hex((slot.HostPfn(t.Gpa >> 12) << 12) | (t.Gpa & 0xFFF))}";
            case ShadowResult.Translated t when write && slot.ReadOnly:
                return $"a write reached gpa {Bits.Hex(t.Gpa)} in read-only slot {slot.Id}";
            case ShadowResult.MmioExit m when slot is not null && !(write && slot.ReadOnly):
                return $"an MMIO exit at gpa {Bits.Hex(m.Gpa)}, which slot {slot.Id} backs";
        }

        // No negative caching: a not-present or reserved-bit fault, and a #GP, come from the tables as
        // they are now. Only a translation (or a rights fault from a cached one) may be stale.
        if (result is ShadowResult.GuestFault { Fault: var fault } && !IsRightsFault(fault))
        {
            var now = PageWalk.Translate(cpu, Memories[^1].View, access).Result;
            return fault.Equals(now) ? null
                : $"{result}: a fault other than a rights fault must come from the guest's tables as they are now, which give {now}";
        }
        int pcid = after.CurrentPcid;
        // Any allowed memory that gives this result will do, so the search starts from the newest (a result is
        // most often what the tables say now) and the first memory that gives it ends the search.
        int from = AllowedFrom(pcid, access.Gva >> 12);
        for (int i = Memories.Count - 1; i >= from; i--)
            if (Matches(result, PageWalk.Translate(cpu, Memories[i].View, access).Result)) return null;
        var allowed = AllowedResults(cpu, pcid, access).ToList();
        return $"{result} is not what the guest's tables gave for gva {Bits.Hex(access.Gva)} at any moment since its last flush in pcid {pcid}: "
            + string.Join("; ", allowed.Distinct());
    }

    /// <summary>A #PF with P=1 and RSVD=0: the translation existed but did not allow the access.</summary>
    static bool IsRightsFault(WalkResult fault) =>
        fault is WalkResult.PageFault pf && pf.ErrorCode.HasFlag(PageFaultErrorCode.Present) && !pf.ErrorCode.HasFlag(PageFaultErrorCode.ReservedBit);

    /// <summary>The index of the first memory still allowed for <paramref name="page"/> in <paramref name="pcid"/>.</summary>
    public int AllowedFrom(int pcid, ulong page) => Math.Max(FlushedAt.GetValueOrDefault(pcid, 0),
        Math.Max(InvalidatedAt.GetValueOrDefault((pcid, page), 0), InvalidatedEverywhereAt.GetValueOrDefault(page, 0)));

    /// <summary>The guest walk's outcome over every memory still allowed for the accessed page in <paramref name="pcid"/>, oldest first.</summary>
    public IEnumerable<WalkResult> AllowedResults(CpuState cpu, int pcid, Access access) =>
        Memories.Skip(AllowedFrom(pcid, access.Gva >> 12)).Select(m => PageWalk.Translate(cpu, m.View, access).Result);

    static bool Matches(VmResult result, WalkResult walk) => result switch
    {
        ShadowResult.Translated t => walk is WalkResult.Translated w && w.Gpa == t.Gpa,
        ShadowResult.MmioExit m => walk is WalkResult.Translated w && w.Gpa == m.Gpa,
        ShadowResult.GuestFault f => walk.Equals(f.Fault),
        _ => false,
    };

    /// <summary>The layer after <paramref name="op"/> returned <paramref name="result"/> and left <paramref name="after"/>.</summary>
    public ShadowTlb Record(ShadowOp op, VmResult result, ShadowState after)
    {
        if (result is VmResult.Rejected) return this;
        bool ok = result is VmResult.Ok;
        // Flushes of every PCID: a change of paging controls, a flush (CR4.PGE toggle), INVPCID of all
        // contexts, MOV CR3 without PCIDs (every translation is PCID 0's), and the host changing
        // memslots (KVM flushes every TLB). Only what the guest's tables say now remains.
        bool flushAll = ok && op switch
        {
            ShadowOp.GuestSetPaging or ShadowOp.FlushTlb or ShadowOp.DeleteSlot or ShadowOp.MoveSlot => true,
            ShadowOp.GuestMovCr3 => !after.GuestPcide,
            ShadowOp.Invpcid i => i.Type is ShadowOp.Invpcid.AllContexts or ShadowOp.Invpcid.AllNonGlobal,
            _ => false,
        };
        if (flushAll) return Start(after);

        var tlb = Memories[^1].SameContents(after) ? this : this with { Memories = Memories.Add(MemorySnapshot.Of(after)) };
        int now = tlb.Memories.Count - 1;
        switch (op)
        {
            // MOV CR3 with PCIDs flushes the new PCID, unless NOFLUSH.
            case ShadowOp.GuestMovCr3 m when ok && (m.Cr3 & ShadowOp.GuestMovCr3.NoFlush) == 0:
                return tlb with { FlushedAt = tlb.FlushedAt.SetItem(after.CurrentPcid, now) };
            case ShadowOp.Invpcid { Type: ShadowOp.Invpcid.SingleContext } i when ok:
                return tlb with { FlushedAt = tlb.FlushedAt.SetItem((int)i.Pcid, now) };
            case ShadowOp.Invpcid { Type: ShadowOp.Invpcid.IndividualAddress } i when ok:
                return tlb with { InvalidatedAt = tlb.InvalidatedAt.SetItem(((int)i.Pcid, i.Gva >> 12), now) };
            // INVLPG removes the page's translations in the current PCID and its global ones in every
            // PCID; the layer does not track which are global, so it removes them in every PCID.
            case ShadowOp.Invlpg i when ok:
                return tlb with { InvalidatedEverywhereAt = tlb.InvalidatedEverywhereAt.SetItem(i.Gva >> 12, now) };
            // A page fault invalidates the faulting address in the current PCID (SDM §4.10.4.1).
            case ShadowOp.GuestAccess a when result is ShadowResult.GuestFault { Fault: WalkResult.PageFault }:
                return tlb with { InvalidatedAt = tlb.InvalidatedAt.SetItem((after.CurrentPcid, a.Access.Gva >> 12), now) };
            default:
                return tlb;
        }
    }

    public override string ToString() =>
        $"{Memories.Count} guest memories since the last flush of every PCID, {FlushedAt.Count} PCIDs flushed and {InvalidatedAt.Count + InvalidatedEverywhereAt.Count} pages invalidated since";
}
