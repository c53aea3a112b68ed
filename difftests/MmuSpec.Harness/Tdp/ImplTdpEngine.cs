using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using ImplMemory = MmuSpec.Impl.Memory;
using ImplTdp = MmuSpec.Impl.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// The impl's TDP MMU as an engine: feeds it spec operations and reads its results and state back
/// into the spec's vocabulary (a <see cref="TdpState"/>), so the two can be compared whole.
/// </summary>
public sealed class ImplTdpEngine : IDisposable
{
    readonly ImplTdp.ITdpVm vm;
    readonly VmConfig config;
    readonly List<ulong> dirty = new();

    public ImplTdpEngine(VmConfig config, ImplMemory.NativePagePool pool)
    {
        this.config = config;
        vm = ImplTdp.TdpVm.Create(config.Format == TdpFormat.Ept ? ImplTdp.TdpFormatKind.Ept : ImplTdp.TdpFormatKind.Stage2, config.SharedBit, pool,
            (ImplTdp.TdpAccessedDirty)config.AccessedDirty);
        vm.TrackHostWrites();
        hostMemory = new HostMemoryComparison(vm.TakeWrittenHostFrames, vm.ReadHostFrame);
    }

    readonly HostMemoryComparison hostMemory;

    public ImplTdp.ITdpVm Vm => vm;

    public VmResult Step(TdpOp op)
    {
        switch (op)
        {
            case TdpOp.CreateSlot c: return Slot(vm.CreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, (byte)c.HostPageSize.Shift(), c.ReadOnly));
            case TdpOp.DeleteSlot d: return Slot(vm.DeleteSlot(d.Id));
            case TdpOp.MoveSlot m: return Slot(vm.MoveSlot(m.Id, m.NewBaseGfn));
            case TdpOp.SetDirtyLogging s: return Slot(vm.SetDirtyLogging(s.Id, s.On));
            case TdpOp.GetDirtyLog g:
                dirty.Clear();
                return vm.GetDirtyLog(g.Id, dirty) == ImplMemory.SlotStatus.Ok
                    ? new VmResult.DirtyLog(dirty.ToImmutableArray())
                    : Rejected();
            case TdpOp.AccessGpa a:
                return Access(vm.Access(a.Gpa, PagingVocabulary.ToImpl(a.Type)), a.Gpa);
            case TdpOp.ZapRange z: return Status(vm.ZapRange(z.StartGfn, z.EndGfn));
            case TdpOp.PreFault f: return PreFault(vm.PreFault(f.Gpa, f.Size), f.Gpa);
            case TdpOp.Age a: return Young(vm.Age(a.StartGfn, a.EndGfn, out bool young), young);
            case TdpOp.TestAge t: return Young(vm.TestAge(t.StartGfn, t.EndGfn, out bool testYoung), testYoung);
            case TdpOp.ZapAll: return Status(vm.ZapAll());
            case TdpOp.SetMaxPageSize p: return Status(vm.SetMaxPageSize((byte)p.Size.Shift()));
            case TdpOp.GuestStore g: return Access(vm.GuestStore(g.Gpa, g.Value, g.Size), g.Gpa);
            case TdpOp.GuestSetPaging p: return Guest(vm.GuestSetPaging(p.Controls is { } pc ? PagingVocabulary.ToImpl(pc) : null, p.Cr3), gpa: 0);
            case TdpOp.GuestAccess a:
                return Guest(vm.GuestAccess(a.Access.Gva, PagingVocabulary.ToImpl(a.Access.Type), PagingVocabulary.ToImpl(a.Access.Privilege)), gpa: null);
            case TdpOp.HostInvalidateStart i: return Status(Notifier.HostInvalidateStart(i.StartGfn, i.EndGfn));
            case TdpOp.HostInvalidateEnd i: return Status(Notifier.HostInvalidateEnd(i.StartGfn, i.EndGfn));
            default: throw new ArgumentException($"unknown operation {op}", nameof(op));
        }
    }

    /// <summary>The remote TLB flushes the impl issued since the last call: null for "everything", else the gfns.</summary>
    public GfnRanges? TakeFlushes() => Flushed(vm.TakeFlushes());

    /// <summary>A flush log in the spec's vocabulary: null for a flush of everything, else the gfns it named.</summary>
    public static GfnRanges? Flushed(ImplTdp.TdpFlushLog log)
    {
        if (log.FlushedAll) return null;
        var ranges = new GfnRange[log.Count];
        for (int i = 0; i < log.Count; i++) ranges[i] = GfnRange.OfCount(log[i].StartGfn, log[i].Count);
        return GfnRanges.Of(ranges);
    }

    VmResult Access(ImplTdp.TdpAccessOutcome o, ulong gpa) => o.Status switch
    {
        ImplTdp.TdpAccessStatus.Mapped => new TdpResult.Mapped(o.Hpa, PageSizes.FromShift(o.PageShift), o.Faulted),
        ImplTdp.TdpAccessStatus.MmioExit => new TdpResult.MmioExit(gpa),
        ImplTdp.TdpAccessStatus.Retry => new TdpResult.Retry(),
        _ => Rejected(),
    };

    VmResult PreFault(ImplTdp.TdpPreFaultOutcome o, ulong gpa) => o.Status switch
    {
        ImplTdp.TdpAccessStatus.Mapped => new TdpResult.Populated(o.Bytes),
        ImplTdp.TdpAccessStatus.MmioExit => new TdpResult.MmioExit(gpa),
        ImplTdp.TdpAccessStatus.Retry => new TdpResult.Retry(),
        _ => Rejected(),
    };

    /// <summary>A guest operation's outcome; an MMIO exit of a guest access reports the gpa the walk reached.</summary>
    VmResult Guest(ImplTdp.TdpGuestOutcome o, ulong? gpa) => o.Status switch
    {
        ImplTdp.TdpGuestStatus.Ok => VmResult.Ok.Instance,
        ImplTdp.TdpGuestStatus.Mapped => Access(o.Access, 0),
        ImplTdp.TdpGuestStatus.MmioExit => new TdpResult.MmioExit(o.Gpa),
        ImplTdp.TdpGuestStatus.GuestFault => new TdpResult.GuestFault(PagingVocabulary.FromImpl(o.Fault)),
        ImplTdp.TdpGuestStatus.Retry => new TdpResult.Retry(),
        _ => Rejected(),
    };

    VmResult Young(ImplTdp.TdpStatus s, bool young) => s == ImplTdp.TdpStatus.Ok ? new TdpResult.Young(young) : Rejected();
    VmResult Status(ImplTdp.TdpStatus s) => s == ImplTdp.TdpStatus.Ok ? VmResult.Ok.Instance : Rejected();
    VmResult Slot(ImplMemory.SlotStatus s) => s == ImplMemory.SlotStatus.Ok ? VmResult.Ok.Instance : Rejected();
    VmResult Rejected() => new VmResult.Rejected(vm.LastRejection ?? "(no reason given)");

    readonly List<string> viewProblems = new();

    /// <summary>
    /// What the last <see cref="View"/> read back wrong that the abstract state cannot show: table
    /// (non-leaf) entries that take rights away (the model's tables carry none), leaves whose format
    /// bits are wrong for their level (<see cref="LeafEntryProblem"/>), and host-memory words
    /// visited against <c>VisitHostMemory</c>'s contract (zero, unaligned, or twice).
    /// </summary>
    public IReadOnlyList<string> ViewProblems => viewProblems;

    /// <summary>
    /// What is wrong with a present non-leaf entry, or null. EPT (SDM Vol. 3C, "EPT Translation
    /// Mechanism"): bits 2:0 are read/write/execute for the whole range below, and KVM's non-leaf SPTEs
    /// grant all three (make_nonleaf_spte); bit 7 (page size) is clear in an entry that references a
    /// table. Stage 2 (Arm ARM, VMSAv8-64 table descriptors): bits 1:0 = 0b11; stage 2 has no
    /// hierarchical permissions and ignores bits 11:2, which KVM writes as zero.
    /// </summary>
    public static string? TableEntryProblem(TdpFormat format, ulong raw) => format switch
    {
        TdpFormat.Ept when (raw & 0x7) != 0x7 => "EPT table entry does not grant read, write and execute",
        TdpFormat.Ept when (raw & 0x80) != 0 => "EPT table entry has the page-size bit",
        TdpFormat.Stage2 when (raw & 0x3) != 0x3 => "stage-2 table descriptor is not 0b11 in bits 1:0",
        TdpFormat.Stage2 when (raw & 0xFFC) != 0 => "stage-2 table descriptor has bits set in 11:2 (KVM writes none)",
        _ => null,
    };

    /// <summary>
    /// What is wrong with a present leaf at <paramref name="level"/> (1 = 4 KiB), or null: the bits the
    /// decoded leaf (frame, size, writable) leaves out. EPT (SDM Vol. 3C, "EPT Translation Mechanism"):
    /// read and execute granted (KVM's make_spte gives a TDP leaf both); bit 7 set above 4 KiB, where it
    /// is what makes the entry a leaf, and clear in a 4 KiB entry (there the CPU ignores it; KVM sets
    /// it only above PG_LEVEL_4K). Stage 2 (Arm ARM, VMSAv8-64 descriptors): a level-3 (4 KiB) page
    /// descriptor is 0b11 in bits 1:0, a block descriptor 0b01 (0b01 at level 3 is reserved: the access
    /// faults); S2AP read (bit 6) and the access flag (bit 10, else an access-flag fault) are set.
    /// </summary>
    public static string? LeafEntryProblem(TdpFormat format, ulong raw, int level, AccessedDirty accessedDirty = AccessedDirty.Untracked) =>
        HardwareLeafProblem(format, raw, level, accessedDirty) ?? WritabilityBitsProblem(format, raw);

    /// <summary>
    /// What is wrong with a leaf's software writability bits (EPT bits 57/58, stage-2 bits 55/56; docs/tdp-concurrency.md),
    /// or null. KVM's check_spte_writable_invariants (spte.h): W needs MMU-writable, MMU-writable needs
    /// host-writable. And the single-threaded model tracks no writes, so a host-writable leaf is MMU-writable.
    /// </summary>
    public static string? WritabilityBitsProblem(TdpFormat format, ulong raw)
    {
        var (write, host, mmu) = format == TdpFormat.Ept ? (1UL << 1, 1UL << 57, 1UL << 58) : (1UL << 7, 1UL << 55, 1UL << 56);
        if ((raw & write) != 0 && (raw & mmu) == 0) return "writable leaf without the MMU-writable bit";
        if (((raw & host) != 0) != ((raw & mmu) != 0)) return "host-writable and MMU-writable bits differ (nothing tracks writes)";
        return null;
    }

    static string? HardwareLeafProblem(TdpFormat format, ulong raw, int level, AccessedDirty accessedDirty) => format switch
    {
        TdpFormat.Ept when (raw & 0x5) != 0x5 => "EPT leaf does not grant read and execute",
        TdpFormat.Ept when level > 1 && (raw & 0x80) == 0 => "EPT leaf above 4 KiB lacks the page-size bit",
        TdpFormat.Ept when level == 1 && (raw & 0x80) != 0 => "4 KiB EPT leaf has bit 7 set (KVM writes it clear)",
        TdpFormat.Stage2 when level == 1 && (raw & 0x3) != 0x3 => "stage-2 level-3 page descriptor is not 0b11 in bits 1:0",
        TdpFormat.Stage2 when level > 1 && (raw & 0x3) != 0x1 => "stage-2 block descriptor is not 0b01 in bits 1:0",
        TdpFormat.Stage2 when (raw & (1UL << 6)) == 0 => "stage-2 leaf lacks S2AP read",
        // With aging, an old stage-2 leaf has AF clear (docs/tdp-model.md, "Aging").
        TdpFormat.Stage2 when (raw & (1UL << 10)) == 0 && accessedDirty == AccessedDirty.Untracked => "stage-2 leaf lacks the access flag",
        // Without EPT A/D the CPU ignores bits 8 and 9; KVM never sets them there (shadow_accessed_mask is 0).
        TdpFormat.Ept when (raw & 0x300) != 0 && accessedDirty != AccessedDirty.Enabled => "EPT leaf has A or D set without EPT A/D enabled",
        _ => null,
    };

    static ulong HostWritableBit(TdpFormat format) => format == TdpFormat.Ept ? 1UL << 57 : 1UL << 55;

    /// <summary>The impl's state read into the spec's vocabulary.</summary>
    public TdpState View()
    {
        var (slots, bitmaps) = Memslots();
        var pages = ImmutableSortedDictionary.CreateBuilder<PageKey, TablePage>();
        viewProblems.Clear();
        vm.VisitPages((key, entries) =>
        {
            var k = Key(key);
            foreach (var x in entries)
            {
                if ((x.IsLeaf ? LeafEntryProblem(config.Format, x.Raw, x.LeafLevel, config.AccessedDirty) : TableEntryProblem(config.Format, x.Raw)) is { } problem)
                    viewProblems.Add($"{(x.IsLeaf ? "leaf" : "table entry")} [{x.Index}] of {k}: 0x{x.Raw:X}: {problem}");
                // Host-writable is the leaf's slot not being read-only (KVM's make_spte: host_writable).
                if (x.IsLeaf && slots.Values.FirstOrDefault(s => x.LeafGfn - s.BaseGfn < s.Pages) is { } slot
                    && ((x.Raw & HostWritableBit(config.Format)) != 0) == slot.ReadOnly)
                    viewProblems.Add($"leaf [{x.Index}] of {k}: 0x{x.Raw:X}: host-writable bit {(slot.ReadOnly ? "set in a read-only" : "clear in a writable")} slot {slot.Id}");
            }
            var e = entries.ToImmutableSortedDictionary(x => x.Index, x => x.IsLeaf
                ? (Spte)new Spte.Leaf(x.LeafGfn, x.LeafLevel, x.HostPfn, x.Writable) { Accessed = Aged(x.Accessed), Dirty = Aged(x.Dirty) }
                : new Spte.Table(Key(x.Child)));
            pages[k] = new TablePage(k, e);
        });
        var host = ImmutableSortedDictionary.CreateBuilder<ulong, ulong>();
        // The visit's contract: each non-zero word once (slot host ranges never overlap), 8-byte aligned.
        vm.VisitHostMemory((hpa, value) =>
        {
            string? problem = value == 0 ? "a zero word" : (hpa & 7) != 0 ? "not 8-byte aligned" : host.ContainsKey(hpa) ? "visited twice" : null;
            if (problem is null)
                host[hpa] = value;
            else
                viewProblems.Add($"host memory word 0x{value:X} at hpa 0x{hpa:X}: {problem}");
        });
        return new TdpState(config, new HostMemslots(slots, bitmaps), PageSizes.FromShift(vm.MaxPageShift), pages.ToImmutable(),
            vm.DirectRoot is { } d ? Key(d) : null, vm.MirrorRoot is { } m ? Key(m) : null, host.ToImmutable(), GuestCpu())
        {
            Notifier = NotifierState(Notifier),
        };
    }

    (ImmutableSortedDictionary<int, HostMemslot>, ImmutableSortedDictionary<int, ImmutableSortedSet<ulong>>) Memslots()
    {
        var slots = vm.Slots.ToImmutableSortedDictionary(s => s.Id, s => new HostMemslot(
            s.Id, s.BaseGfn, s.Pages, s.HostPfnBase, PageSizes.FromShift(s.HostPageShift), s.ReadOnly, s.DirtyLogging));
        var bitmaps = slots.Values.Where(s => s.DirtyLogging)
            .ToImmutableSortedDictionary(s => s.Id, s => vm.DirtyOffsets(s.Id).ToImmutableSortedSet());
        return (slots, bitmaps);
    }

    CpuState? GuestCpu() => vm.GuestControls is { } gc
        ? new CpuState(PagingVocabulary.FromImpl(gc), vm.GuestCr3,
            gc.Mode == MmuSpec.Impl.Paging.PagingMode.Pae ? Enumerable.Range(0, 4).Select(vm.GuestPdpte).ToArray() : new ulong[4])
        : null;

    /// <summary><c>Equals(spec, GuestCpu())</c> with no CPU state built: the controls, CR3 and each PDPTE register.</summary>
    bool SameGuestCpu(CpuState? spec)
    {
        if (vm.GuestControls is not { } gc) return spec is null;
        if (spec is null || spec.Cr3 != vm.GuestCr3 || !spec.Controls.Equals(PagingVocabulary.FromImpl(gc))) return false;
        bool pae = gc.Mode == MmuSpec.Impl.Paging.PagingMode.Pae;
        for (int i = 0; i < spec.Pdptes.Length; i++)
            if (spec.Pdptes[i] != (pae ? vm.GuestPdpte(i) : 0)) return false;
        return true;
    }

    readonly HashSet<PageKey> pagesSeen = new();
    readonly HashSet<ulong> wordsSeen = new();

    /// <summary>
    /// Whether <see cref="View"/> would equal <paramref name="spec"/> with no <see cref="ViewProblems"/>: the
    /// per-step state comparison's common case, read in one pass over the impl's tables and host memory and
    /// compared entry by entry, without building the view (most of a TDP step's cost). False whenever
    /// anything differs or looks wrong, so that the caller reads the full view and reports from it as before.
    /// Host memory is read only where either side changed it since the last agreement
    /// (<see cref="HostMemoryComparison"/>), all of it, with the visit's contract checked, with <paramref name="fullMemory"/>.
    /// </summary>
    public bool Matches(TdpState spec, bool fullMemory = false)
    {
        viewProblems.Clear();
        bool? memory = hostMemory.ChangedFramesEqual(spec.HostMemory, fullMemory);
        if (memory == false) return false;
        if (!config.Equals(spec.Config) || PageSizes.FromShift(vm.MaxPageShift) != spec.MaxPageSize
            || !Equals(vm.DirectRoot is { } d ? Key(d) : null, spec.DirectRoot)
            || !Equals(vm.MirrorRoot is { } m ? Key(m) : null, spec.MirrorRoot)
            || !SameGuestCpu(spec.GuestCpu)
            || !NotifierState(Notifier).Equals(spec.Notifier))
            return false;
        if (!MemslotComparison.Same(vm.Slots, vm.DirtyOffsets, spec.Memslots)) return false;

        bool same = true;
        pagesSeen.Clear();
        vm.VisitPages((key, entries) =>
        {
            if (!same) return;
            var k = Key(key);
            if (!pagesSeen.Add(k) || !spec.Pages.TryGetValue(k, out var page) || !page.Key.Equals(k) || page.Entries.Count != entries.Count)
            {
                same = false;
                return;
            }
            foreach (var x in entries)
            {
                if ((x.IsLeaf ? LeafEntryProblem(config.Format, x.Raw, x.LeafLevel, config.AccessedDirty) : TableEntryProblem(config.Format, x.Raw)) is not null
                    || !page.Entries.TryGetValue(x.Index, out var entry)
                    || !(x.IsLeaf
                        ? entry is Spte.Leaf l && l.Gfn == x.LeafGfn && l.Level == x.LeafLevel && l.HostPfn == x.HostPfn && l.Writable == x.Writable
                            && l.Accessed == Aged(x.Accessed) && l.Dirty == Aged(x.Dirty)
                        : entry is Spte.Table t && SameKey(t.Child, x.Child)))
                {
                    same = false;
                    return;
                }
            }
        });
        if (!same || pagesSeen.Count != spec.Pages.Count) return false;
        if (memory == true) return true;

        wordsSeen.Clear();
        vm.VisitHostMemory((hpa, value) =>
        {
            if (same && (value == 0 || (hpa & 7) != 0 || !wordsSeen.Add(hpa)
                || !spec.HostMemory.TryGetValue(hpa, out ulong expected) || expected != value))
                same = false;
        });
        if (!same || wordsSeen.Count != spec.HostMemory.Count) return false;
        hostMemory.Agree(spec.HostMemory);
        return true;
    }

    /// <summary><c>spec.Equals(Key(impl))</c> field by field: the in-place comparison builds no key per table entry.</summary>
    static bool SameKey(PageKey spec, ImplTdp.TdpPageKey impl) =>
        spec.Gfn == impl.Gfn && spec.Role.Level == impl.Level && spec.Role.Mirror == impl.Mirror;

    /// <summary>A leaf's accessed or dirty state as compared: only in a VM that tracks it (the aging property).</summary>
    bool Aged(bool bit) => config.AccessedDirty != AccessedDirty.Untracked && bit;

    /// <summary>The impl's MMU-notifier side (TdpMmu.Notifier.cs).</summary>
    ImplTdp.ITdpHostNotifier Notifier => (ImplTdp.ITdpHostNotifier)vm;

    /// <summary>An MMU-notifier side read into the spec's vocabulary (both TDP MMUs report it the same way).</summary>
    public static HostNotifierState NotifierState(ImplTdp.ITdpHostNotifier n)
    {
        var (retryStart, retryEnd) = n.InvalidateRetryRange;
        return new HostNotifierState([.. n.InvalidationsInProgress.Select(r => new GfnRange(r.StartGfn, r.EndGfn))],
            new GfnRange(retryStart, retryEnd), n.InvalidateSequence,
            GfnRanges.Of(n.MigratedHostFrames.Select(r => new GfnRange(r.Start, r.End))));
    }

    static PageKey Key(ImplTdp.TdpPageKey k) => new(k.Gfn, new MmuRole(k.Level, k.Mirror));

    public void Dispose() => vm.Dispose();
}
