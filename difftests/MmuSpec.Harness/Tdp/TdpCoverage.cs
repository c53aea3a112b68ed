using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// The situations of the TDP MMU (docs/coverage.md), judged from outside both sides: each
/// operation, the spec's result and the spec's states before and after it (which leaves appeared,
/// went or lost W, which roots and dirty bitmaps changed). The rules are docs/tdp-model.md's.
/// </summary>
public static partial class TdpCoverage
{
    const string Hit = "access: hit", Miss = "access: miss, mapped", Wp4K = "access: write-protection fault, 4K leaf made writable",
        WpHuge = "access: write-protection fault, huge leaf made writable (slot not logging)",
        NoSlot = "access: MMIO exit, no memslot", ReadOnlyWrite = "access: MMIO exit, write to a read-only slot",
        TooWide = "access: rejected, gpa beyond the guest-physical width";
    static readonly string[] Sizes = ["mapping size: 4K", "mapping size: 2M", "mapping size: 1G"];
    const string LimitedPolicy = "mapping level limited by: max page size policy", LimitedHost = "mapping level limited by: host page size",
        LimitedEdge = "mapping level limited by: slot edge or host alignment";
    const string SubtreeReplaced = "huge page: a huge leaf replaced a table subtree";
    const string Shared = "shared bit: shared gpa, direct root", Private = "shared bit: private gpa, mirror root",
        DirectRoot = "shared bit: direct root created", MirrorRoot = "shared bit: mirror root created";
    const string ReadOnlyRead = "read-only slot: read mapped read-only";
    const string LogOn = "dirty logging: off -> on", LogOnProtects = "dirty logging: off -> on write-protects mappings",
        LogOff = "dirty logging: on -> off", LogSame = "dirty logging: on -> on (nothing changes)",
        FetchNonEmpty = "dirty logging: fetch, non-empty", FetchEmpty = "dirty logging: fetch, empty",
        FetchRejected = "dirty logging: fetch rejected (slot not logging)", MarkedDirty = "dirty logging: a write marks its page dirty",
        Split = "dirty logging: write to a huge leaf splits it (4K mapped)", HugeNotUsed = "dirty logging: huge page not used (4K mapped)";
    const string ZapInsideHuge = "zap: range inside a huge page", ZapLeaves = "zap: range removes leaves", ZapNothing = "zap: range over nothing mapped",
        ZapAllMapped = "zap: zap all with mappings", ZapRejected = "zap: range rejected";
    const string Create = "memslot: create", CreateRejected = "memslot: create rejected", MoveMapped = "memslot: move zaps its mappings",
        MoveEmpty = "memslot: move without mappings", DeleteMapped = "memslot: delete zaps its mappings",
        DeleteEmpty = "memslot: delete without mappings", NoSuchSlot = "memslot: operation on a missing slot rejected";
    const string PreFaultWhole = "pre-fault: the whole range mapped", PreFaultPartial = "pre-fault: stopped early, the range leaves the memslots",
        PreFaultNothing = "pre-fault: nothing mapped, the start is in no memslot", PreFaultRejected = "pre-fault: rejected (empty, unaligned or wrapping)";
    const string GuestOff = "guest: paging off, gva is the gpa", GuestMapped = "guest: access translated and mapped",
        GuestPf = "guest: walk #PF", GuestGp = "guest: walk #GP", GuestTableRead = "guest: a table read faulted in a mapping",
        GuestPagingOn = "guest: paging turned on", GuestPagingOff = "guest: paging turned off", GuestCr3Gp = "guest: CR3 load #GP";

    const string AgeYoung = "aging: age found young", AgeOld = "aging: age found old", AgeZapped = "aging: age with A/D off zapped",
        TestAgeOp = "aging: test_age", OldLeafFault = "aging: access to an old leaf faulted (no hardware A/D)";

    static readonly string[] SharedBitSituations = [Shared, Private, DirectRoot, MirrorRoot];
    static readonly string[] AgingSituations = [AgeYoung, AgeOld, AgeZapped, TestAgeOp, OldLeafFault];

    /// <summary>Every situation of the TDP family, in report order.</summary>
    public static readonly IReadOnlyList<string> All =
    [
        Hit, Miss, Wp4K, WpHuge, NoSlot, ReadOnlyWrite, TooWide,
        .. Sizes, LimitedPolicy, LimitedHost, LimitedEdge, SubtreeReplaced,
        .. SharedBitSituations, ReadOnlyRead,
        LogOn, LogOnProtects, LogOff, LogSame, FetchNonEmpty, FetchEmpty, FetchRejected, MarkedDirty, Split, HugeNotUsed,
        ZapInsideHuge, ZapLeaves, ZapNothing, ZapAllMapped, ZapRejected,
        PreFaultWhole, PreFaultPartial, PreFaultNothing, PreFaultRejected,
        Create, CreateRejected, MoveMapped, MoveEmpty, DeleteMapped, DeleteEmpty, NoSuchSlot,
        .. AgingSituations,
        .. WalkCoverage.Modes, GuestOff, GuestMapped, GuestPf, GuestGp, GuestTableRead, GuestPagingOn, GuestPagingOff, GuestCr3Gp,
        .. NotifierSituations,
    ];

    /// <summary>What a TDP property on a VM of <paramref name="config"/> should reach: the shared-bit situations only with a shared bit.</summary>
    public static IReadOnlyList<string> Expected(VmConfig config, bool notifiers = false) =>
        All.Where(s => (config.SharedBit is not null || !SharedBitSituations.Contains(s))
            && (config.AccessedDirty != AccessedDirty.Untracked || !AgingSituations.Contains(s))
            && (notifiers || !NotifierSituations.Contains(s))).ToList();

    /// <summary>Runs the case on the spec and names the situations of each step.</summary>
    public static void Classify(TdpCase c, Action<string> hit)
    {
        var state = TdpState.Create(c.Config);
        foreach (var op in c.Ops)
        {
            TdpStepped stepped;
            try { stepped = state.Step(op); }
            catch (ArgumentException) { return; }   // the differential run reports what the spec refused
            Classify(op, stepped.Result, state, stepped.State, hit);
            state = stepped.State;
        }
    }

    static void Classify(TdpOp op, VmResult r, TdpState before, TdpState after, Action<string> hit)
    {
        var (added, removed, protectedLeaves) = LeafChanges(before, after);
        foreach (var (_, leaf) in added)
        {
            hit(Sizes[leaf.Level - 1]);
            if (after.Slots.Values.FirstOrDefault(s => s.Contains(leaf.Gfn)) is { } slot)
            {
                if (slot.ReadOnly) hit(ReadOnlyRead);
                LimitedBy(after, slot, leaf, hit);
            }
        }
        if (before.DirectRoot is null && after.DirectRoot is not null && before.Config.SharedBit is not null) hit(DirectRoot);
        if (before.MirrorRoot is null && after.MirrorRoot is not null) hit(MirrorRoot);
        if (DirtyCount(after) > DirtyCount(before)) hit(MarkedDirty);
        // Table pages freed by an access: a huge leaf took the place of a table and everything below it.
        if (op is TdpOp.AccessGpa or TdpOp.GuestStore or TdpOp.GuestAccess or TdpOp.PreFault && !ReferenceEquals(before.Pages, after.Pages)
            && before.Pages.Keys.Any(k => !after.Pages.ContainsKey(k)))
            hit(SubtreeReplaced);

        SlotUpdate(op, r, before, hit);
        switch (op)
        {
            case TdpOp.AccessGpa a:
                Access(a.Gpa, a.Type, r, before, added, removed, hit);
                break;
            case TdpOp.GuestStore g:
                Access(g.Gpa, AccessType.Write, r, before, added, removed, hit);
                break;
            case TdpOp.GuestAccess g:
                Guest(g.Access, r, before, added, hit);
                break;
            case TdpOp.GuestSetPaging p:
                hit(r is TdpResult.GuestFault ? GuestCr3Gp : p.Controls is null ? GuestPagingOff : GuestPagingOn);
                break;
            case TdpOp.SetDirtyLogging d:
                if (r is not VmResult.Ok) { hit(NoSuchSlot); break; }
                bool was = before.Slots[d.Id].DirtyLogging;
                if (!was && d.On)
                {
                    hit(LogOn);
                    if (protectedLeaves > 0) hit(LogOnProtects);
                }
                if (was) hit(d.On ? LogSame : LogOff);   // off -> off: nothing to name
                break;
            case TdpOp.GetDirtyLog g:
                hit(r switch
                {
                    VmResult.DirtyLog { Gfns.Length: > 0 } => FetchNonEmpty,
                    VmResult.DirtyLog => FetchEmpty,
                    _ => before.Slots.ContainsKey(g.Id) ? FetchRejected : NoSuchSlot,
                });
                break;
            case TdpOp.ZapRange z:
                if (r is VmResult.Rejected) { hit(ZapRejected); break; }
                hit(removed.Count > 0 ? ZapLeaves : ZapNothing);
                if (removed.Any(l => l.Leaf.Level > 1 && (z.StartGfn > l.Leaf.Gfn || z.EndGfn < l.Leaf.Gfn + l.Leaf.Frames))) hit(ZapInsideHuge);
                break;
            case TdpOp.HostInvalidateStart or TdpOp.HostInvalidateEnd:
                Notifier(op, r, before, removed.Count, hit);
                break;
            case TdpOp.PreFault f:
                hit(r switch
                {
                    TdpResult.Populated p when p.Bytes >= f.Size => PreFaultWhole,
                    TdpResult.Populated => PreFaultPartial,
                    TdpResult.MmioExit => PreFaultNothing,
                    TdpResult.Retry => PreFaultRetried,
                    _ => PreFaultRejected,
                });
                break;
            case TdpOp.ZapAll:
                if (before.Leaves().Any()) hit(ZapAllMapped);
                break;
            case TdpOp.Age when r is TdpResult.Young y:
                hit(y.IsYoung ? AgeYoung : AgeOld);
                if (removed.Count > 0) hit(AgeZapped);
                break;
            case TdpOp.TestAge when r is TdpResult.Young:
                hit(TestAgeOp);
                break;
            case TdpOp.CreateSlot:
                hit(r is VmResult.Ok ? Create : CreateRejected);
                break;
            case TdpOp.MoveSlot or TdpOp.DeleteSlot when r is VmResult.Rejected:
                // A move into an overlapping range is rejected too; only a missing id is named.
                if (!before.Slots.ContainsKey(op is TdpOp.MoveSlot m ? m.Id : ((TdpOp.DeleteSlot)op).Id)) hit(NoSuchSlot);
                break;
            case TdpOp.MoveSlot:
                hit(removed.Count > 0 ? MoveMapped : MoveEmpty);
                break;
            case TdpOp.DeleteSlot:
                hit(removed.Count > 0 ? DeleteMapped : DeleteEmpty);
                break;
        }
    }

    /// <summary>An access through the MMU at <paramref name="gpa"/> (AccessGpa, GuestStore): hit, miss, write-protection fault, split, exit.</summary>
    static void Access(ulong gpa, AccessType type, VmResult r, TdpState before, List<(PageKey Page, Spte.Leaf Leaf)> added,
        List<(PageKey Page, Spte.Leaf Leaf)> removed, Action<string> hit)
    {
        var config = before.Config;
        switch (r)
        {
            case VmResult.Rejected: hit(TooWide); return;
            case TdpResult.Retry: hit(Retried); return;
            case TdpResult.MmioExit:
                ulong g = (gpa >> 12) & ~config.DirectBits;
                hit(before.Slots.Values.Any(s => s.Contains(g)) ? ReadOnlyWrite : NoSlot);
                return;
            case TdpResult.Mapped m:
                ulong gfn = (gpa >> 12) & ~config.DirectBits;
                bool mirror = config.SharedBit is not null && ((gpa >> 12) & config.DirectBits) == 0;
                if (config.SharedBit is not null) hit(mirror ? Private : Shared);
                if (!m.Faulted) { hit(Hit); return; }
                if (MapsMovedFrame(before, gfn)) hit(MovedFrameMapped);
                var old = before.Leaves().FirstOrDefault(l => l.Page.Role.Mirror == mirror && l.Leaf.Covers(gfn));
                if (old.Leaf is { Accessed: false } && config.AccessedDirty == AccessedDirty.Disabled && (type != AccessType.Write || old.Leaf.Writable))
                    hit(OldLeafFault);
                else if (old.Leaf is null) hit(Miss);
                else if (old.Leaf.Level == 1) hit(Wp4K);
                else if (removed.Any(l => l.Leaf.Equals(old.Leaf)) && added.Any(l => l.Leaf.Level == 1 && l.Leaf.Covers(gfn))) hit(Split);
                else hit(WpHuge);
                return;
        }
    }

    static void Guest(Access access, VmResult r, TdpState before, List<(PageKey Page, Spte.Leaf Leaf)> added, Action<string> hit)
    {
        if (before.GuestCpu is not { } cpu)
        {
            hit(GuestOff);
            return;
        }
        hit(WalkCoverage.ModeName(cpu.Controls.Mode));
        switch (r)
        {
            case TdpResult.GuestFault { Fault: WalkResult.PageFault }: hit(GuestPf); break;
            case TdpResult.GuestFault: hit(GuestGp); break;
            case TdpResult.Mapped: hit(GuestMapped); break;
        }
        // A leaf for a guest-table gfn: the walk's own table reads and A/D updates go through the MMU.
        if (added.Count > 0 && r is not TdpResult.Mapped { Faulted: true }) hit(GuestTableRead);
    }

    /// <summary>Why a new leaf is no bigger than it is: dirty logging, the policy, the host pages, or the slot's edges and alignment.</summary>
    static void LimitedBy(TdpState after, HostMemslot slot, Spte.Leaf leaf, Action<string> hit)
    {
        if (LoweredByNotifier(after, slot, leaf)) { hit(NotifierLowered); return; }
        if (slot.DirtyLogging)
        {
            if (after.MappingLevel(slot.WithDirtyLogging(false), leaf.Gfn) > 1) hit(HugeNotUsed);
            return;
        }
        int policy = LevelOf(after.MaxPageSize), host = LevelOf(slot.HostPageSize);
        int cap = Math.Min(3, Math.Min(policy, host));
        if (leaf.Level < cap) { hit(LimitedEdge); return; }
        if (cap == 3) return;
        if (policy == cap) hit(LimitedPolicy);
        if (host == cap) hit(LimitedHost);
    }

    static int LevelOf(PageSize size) => size switch { PageSize.Size4K => 1, PageSize.Size2M => 2, _ => 3 };

    static long DirtyCount(TdpState s) => s.DirtyBitmaps.Values.Sum(b => (long)b.Count);

    /// <summary>
    /// Leaves present after the step and not before, leaves present before and not after, and how
    /// many leaves lost W; only table pages whose object changed are compared (the model's maps are
    /// persistent, so an untouched page is the same object).
    /// </summary>
    static (List<(PageKey, Spte.Leaf)> Added, List<(PageKey Page, Spte.Leaf Leaf)> Removed, int Protected) LeafChanges(TdpState before, TdpState after)
    {
        var added = new List<(PageKey, Spte.Leaf)>();
        var removed = new List<(PageKey, Spte.Leaf)>();
        int protectedCount = 0;
        if (ReferenceEquals(before.Pages, after.Pages)) return (added, removed, 0);
        foreach (var (key, page) in after.Pages)
        {
            before.Pages.TryGetValue(key, out var old);
            if (ReferenceEquals(old, page)) continue;
            foreach (var (i, e) in page.Entries)
            {
                if (e is not Spte.Leaf leaf) continue;
                var was = old?.Entries.GetValueOrDefault(i);
                if (was is Spte.Leaf l && l.Gfn == leaf.Gfn && l.Level == leaf.Level)
                {
                    if (l.Writable && !leaf.Writable) protectedCount++;
                }
                else added.Add((key, leaf));
            }
        }
        foreach (var (key, page) in before.Pages)
        {
            after.Pages.TryGetValue(key, out var now);
            if (ReferenceEquals(now, page)) continue;
            foreach (var (i, e) in page.Entries)
                if (e is Spte.Leaf leaf && !(now?.Entries.GetValueOrDefault(i) is Spte.Leaf l && l.Gfn == leaf.Gfn && l.Level == leaf.Level))
                    removed.Add((key, leaf));
        }
        return (added, removed, protectedCount);
    }
}
