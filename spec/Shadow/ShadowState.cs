using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

/// <summary>The state after a shadow-VM operation and what the operation returned.</summary>
public sealed record ShadowStepped(ShadowState State, VmResult Result);

/// <summary>
/// The MMU-model layer for shadow paging, written to be obvious rather than fast: shadow pages in an
/// immutable map keyed by (gfn, role), every entry's gfn stored explicitly, and everything KVM keeps
/// incrementally (reverse maps, parent links, unsync-children bitmaps, the pages of a gfn) recomputed
/// by a plain scan when a rule needs it. <see cref="Step"/> is a pure function; the rules are those
/// of docs/shadow-model.md, one file per section of it: ShadowState.Memslots.cs, .SyncAndZap.cs,
/// .Roots.cs (with the cached-root list in ShadowRoots.cs), .Entries.cs, .GuestOperations.cs, .Fill.cs.
/// </summary>
public sealed partial record ShadowState(
    ShadowConfig Config,
    HostMemslots Memslots,
    ImmutableSortedDictionary<ulong, ulong> HostMemory,
    CpuState? GuestCpu,
    bool GuestPcide,
    ImmutableSortedDictionary<ShadowKey, ShadowPage> Pages,
    ShadowRoots Roots)
{
    /// <summary>A new VM: no memslots, paging off, no shadow pages.</summary>
    public static ShadowState Create(ShadowConfig config) => new(config, HostMemslots.Empty,
        ImmutableSortedDictionary<ulong, ulong>.Empty, GuestCpu: null, GuestPcide: false,
        ImmutableSortedDictionary<ShadowKey, ShadowPage>.Empty, ShadowRoots.None);

    /// <summary>The current root's pages, or null when there is no current root.</summary>
    public ShadowRoot? Root => Roots.Current?.Root;

    /// <summary>The PCID the guest runs with: CR3 bits 11:0 when CR4.PCIDE is set, else 0.</summary>
    public int CurrentPcid => GuestCpu is { } cpu ? ShadowRoots.PcidOf(cpu.Cr3, GuestPcide) : 0;

    public ShadowStepped Step(ShadowOp op) => op switch
    {
        ShadowOp.CreateSlot c => CreateSlot(c),
        ShadowOp.DeleteSlot d => WithSlot(d.Id, s => Done(ZapAllPages().With(Memslots.Delete(s)) with
        {
            HostMemory = SlotMemory.Discard(HostMemory, s),
        })),
        ShadowOp.MoveSlot m => WithSlot(m.Id, s =>
            Memslots.MoveProblem(s, m.NewBaseGfn, Config.GfnLimit) is { } problem
                ? Reject(problem)
                : Done(ZapAllPages().With(Memslots.Move(s, m.NewBaseGfn)))),
        ShadowOp.SetDirtyLogging d => WithSlot(d.Id, s => Done(SetDirtyLogging(s, d.On))),
        ShadowOp.GetDirtyLog g => WithSlot(g.Id, GetDirtyLog),
        ShadowOp.GuestStore g => GuestStore(g),
        ShadowOp.GuestSetPaging p => GuestSetPaging(p),
        ShadowOp.GuestMovCr3 m => GuestMovCr3(m.Cr3),
        ShadowOp.GuestAccess a => GuestAccess(a.Access),
        ShadowOp.Invlpg i => Invlpg(i.Gva),
        ShadowOp.Invpcid i => Invpcid(i),
        ShadowOp.FlushTlb => GuestCpu is null ? Reject("paging is off") : Done(Running().FlushAllPcids()),
        ShadowOp.ZapRange z => z.StartGfn < z.EndGfn && z.EndGfn <= Config.GfnLimit
            ? Done(RemoveLeaves(l => l.Gfn >= z.StartGfn && l.Gfn < z.EndGfn))
            : Reject($"zap range [{Bits.Hex(z.StartGfn)}, {Bits.Hex(z.EndGfn)}) is empty or beyond the guest-physical space"),
        ShadowOp.ZapAll => Done(ZapAllPages()),
        _ => throw new ArgumentException($"unknown operation {op}", nameof(op)),
    };

    // ---- results ----

    ShadowStepped WithSlot(int id, Func<HostMemslot, ShadowStepped> then) =>
        Slots.TryGetValue(id, out var slot) ? then(slot) : Reject(HostMemslots.NoSlot(id));

    static ShadowStepped Done(ShadowState state) => new(state, VmResult.Ok.Instance);
    ShadowStepped GeneralProtection(GpReason reason) => new(this, new ShadowResult.GuestFault(new WalkResult.GeneralProtection(reason)));
    ShadowStepped Reject(string reason) => new(this, new VmResult.Rejected(reason));

    // ---- equality and printing: by content ----

    public bool Equals(ShadowState? other) =>
        other is not null && Config.Equals(other.Config) && Roots.Equals(other.Roots) && GuestPcide == other.GuestPcide
        && Memslots.Equals(other.Memslots)
        && Pages.SameEntries(other.Pages)
        && HostMemory.SameEntries(other.HostMemory)
        && Equals(GuestCpu, other.GuestCpu);

    public override int GetHashCode() => HashCode.Combine(Config, Slots.Count, Pages.Count);

    public override string ToString() =>
        $"{Config}, {Slots.Count} slots, {Pages.Count} shadow pages ({Pages.Values.Count(p => p.Unsync)} unsync), roots: {Roots}"
        + (GuestCpu is null ? ", paging off" : $", guest {GuestCpu}{(GuestPcide ? " PCIDE" : "")}");
}
