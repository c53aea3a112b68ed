using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

/// <summary>Guest memory at one moment: the memslots and the host memory behind them.</summary>
public sealed record MemorySnapshot(ImmutableSortedDictionary<int, TdpMemslot> Slots, ImmutableSortedDictionary<ulong, ulong> HostMemory)
{
    GuestMemory? _view;

    /// <summary>The guest-physical view the guest's walk reads (built once).</summary>
    public GuestMemory View => _view ??= SlotMemory.View(Slots, HostMemory);

    public static MemorySnapshot Of(ShadowState state) => new(state.Slots, state.HostMemory);

    public bool SameContents(ShadowState state) => Slots.SequenceEqual(state.Slots) && HostMemory.SequenceEqual(state.HostMemory);
}

/// <summary>
/// The architecture layer for shadow paging (docs/shadow-model.md, "Oracle 2"): which translations a
/// guest may still observe. A TLB may hold, for a 4 KiB page v, any translation the guest's tables
/// gave for v at any moment since the last full flush (MOV CR3, a flush, the host changing memslots)
/// and since the last INVLPG of v, and nothing older. The layer keeps guest memory after every change
/// since the last full flush, and judges an access's result by walking the guest's tables over each
/// memory still allowed for its page.
/// </summary>
/// <param name="Memories">Guest memory after every change since the last full flush, oldest first.</param>
/// <param name="InvalidatedAt">For a page INVLPG'd since then: the index of the first memory still allowed.</param>
public sealed record ShadowTlb(ImmutableList<MemorySnapshot> Memories, ImmutableSortedDictionary<ulong, int> InvalidatedAt)
{
    public static ShadowTlb Start(ShadowState state) =>
        new([MemorySnapshot.Of(state)], ImmutableSortedDictionary<ulong, int>.Empty);

    /// <summary>
    /// Why the architecture does not allow <paramref name="result"/> of <paramref name="op"/>, or null
    /// if it does. Call before <see cref="Record"/>, with the state after the operation.
    /// </summary>
    public string? Violation(ShadowOp op, ShadowResult result, ShadowState after)
    {
        if (op is not ShadowOp.GuestAccess { Access: var access } || result is ShadowResult.Rejected) return null;
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
            var now = PageWalk.Explain(cpu, Memories[^1].View, access).Result;
            return fault.Equals(now) ? null
                : $"{result}: a fault other than a rights fault must come from the guest's tables as they are now, which give {now}";
        }
        var allowed = AllowedResults(cpu, access).ToList();
        if (allowed.Any(r => Matches(result, r))) return null;
        return $"{result} is not what the guest's tables gave for gva {Bits.Hex(access.Gva)} at any moment since its last flush: "
            + string.Join("; ", allowed.Distinct());
    }

    /// <summary>A #PF with P=1 and RSVD=0: the translation existed but did not allow the access.</summary>
    static bool IsRightsFault(WalkResult fault) =>
        fault is WalkResult.PageFault pf && pf.ErrorCode.HasFlag(PageFaultErrorCode.Present) && !pf.ErrorCode.HasFlag(PageFaultErrorCode.ReservedBit);

    /// <summary>The guest walk's outcome over every memory still allowed for the accessed page, oldest first.</summary>
    public IEnumerable<WalkResult> AllowedResults(CpuState cpu, Access access)
    {
        int from = InvalidatedAt.GetValueOrDefault(access.Gva >> 12, 0);
        return Memories.Skip(from).Select(m => PageWalk.Explain(cpu, m.View, access).Result);
    }

    static bool Matches(ShadowResult result, WalkResult walk) => result switch
    {
        ShadowResult.Translated t => walk is WalkResult.Translated w && w.Gpa == t.Gpa,
        ShadowResult.MmioExit m => walk is WalkResult.Translated w && w.Gpa == m.Gpa,
        ShadowResult.GuestFault f => walk.Equals(f.Fault),
        _ => false,
    };

    /// <summary>The layer after <paramref name="op"/> returned <paramref name="result"/> and left <paramref name="after"/>.</summary>
    public ShadowTlb Record(ShadowOp op, ShadowResult result, ShadowState after)
    {
        if (result is ShadowResult.Rejected) return this;
        // MOV CR3 (and any paging change, which the model makes one), a full flush, and the host
        // changing memslots (KVM flushes every TLB) leave only what the guest's tables say now.
        if (op is ShadowOp.GuestSetPaging or ShadowOp.FlushTlb or ShadowOp.DeleteSlot or ShadowOp.MoveSlot
            && result is ShadowResult.Ok)
            return Start(after);
        var tlb = Memories[^1].SameContents(after) ? this : this with { Memories = Memories.Add(MemorySnapshot.Of(after)) };
        // INVLPG, and a page fault (SDM §4.10.4.1), invalidate the entries for that address.
        ulong? invalidated = op switch
        {
            ShadowOp.Invlpg i => i.Gva,
            ShadowOp.GuestAccess a when result is ShadowResult.GuestFault { Fault: WalkResult.PageFault } => a.Access.Gva,
            _ => null,
        };
        if (invalidated is { } gva)
            tlb = tlb with { InvalidatedAt = tlb.InvalidatedAt.SetItem(gva >> 12, tlb.Memories.Count - 1) };
        return tlb;
    }

    public override string ToString() => $"{Memories.Count} guest memories since the last full flush, {InvalidatedAt.Count} pages invalidated since";
}
