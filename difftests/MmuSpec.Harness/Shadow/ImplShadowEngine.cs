using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using ImplMemory = MmuSpec.Impl.Memory;
using ImplShadow = MmuSpec.Impl.Shadow;

namespace MmuSpec.Harness.Shadow;

/// <summary>
/// The impl's shadow MMU as an engine: feeds it spec operations and reads its results and state
/// back into the spec's vocabulary (a <see cref="ShadowState"/>), so the two can be compared whole.
/// Also checks the impl's derived structures (reverse map, parent lists, unsync-children bitmaps)
/// against a scan of its own pages.
/// </summary>
public sealed class ImplShadowEngine : IDisposable
{
    readonly ImplShadow.IShadowVm vm;
    readonly ShadowConfig config;
    readonly List<ulong> dirty = new();

    /// <param name="observe">Wraps the impl's VM (tests: a view that misreports a structure); null in every campaign.</param>
    public ImplShadowEngine(ShadowConfig config, ImplMemory.NativePagePool pool, Func<ImplShadow.IShadowVm, ImplShadow.IShadowVm>? observe = null)
    {
        this.config = config;
        vm = Create(config, pool);
        if (observe is not null) vm = observe(vm);
        vm.TrackHostWrites();
        hostMemory = new HostMemoryComparison(vm.TakeWrittenHostFrames, vm.ReadHostFrame);
    }

    readonly HostMemoryComparison hostMemory;

    static ImplShadow.IShadowVm Create(ShadowConfig config, ImplMemory.NativePagePool pool)
    {
        return ImplShadow.ShadowVm.Create(config.MaxPhyAddr, config.AllowUnsync, pool, config.RootPolicy switch
        {
            ShadowRootPolicy.KeepAndResync => ImplShadow.ShadowRootPolicy.KeepAndResync,
            ShadowRootPolicy.Upstream => ImplShadow.ShadowRootPolicy.Upstream,
            _ => throw new ArgumentOutOfRangeException(nameof(config), config.RootPolicy, "unknown root policy"),
        }, config.Prefetch);
    }

    public ImplShadow.IShadowVm Vm => vm;

    public VmResult Step(ShadowOp op)
    {
        pagesRead = false;
        switch (op)
        {
            case ShadowOp.CreateSlot c: return Slot(vm.CreateSlot(c.Id, c.BaseGfn, c.Pages, c.HostPfnBase, c.ReadOnly));
            case ShadowOp.DeleteSlot d: return Slot(vm.DeleteSlot(d.Id));
            case ShadowOp.MoveSlot m: return Slot(vm.MoveSlot(m.Id, m.NewBaseGfn));
            case ShadowOp.SetDirtyLogging s: return Slot(vm.SetDirtyLogging(s.Id, s.On));
            case ShadowOp.GetDirtyLog g:
                dirty.Clear();
                var status = vm.GetDirtyLog(g.Id, dirty);
                return status == ImplMemory.SlotStatus.Ok ? new VmResult.DirtyLog(dirty.ToImmutableArray()) : Slot(status);
            case ShadowOp.GuestStore g: return Result(vm.GuestStore(g.Gpa, g.Value, g.Size));
            case ShadowOp.GuestSetPaging p: return Result(vm.GuestSetPaging(PagingVocabulary.ToImpl(p.Controls), p.Cr3, p.Pcide));
            case ShadowOp.GuestMovCr3 m: return Result(vm.GuestMovCr3(m.Cr3));
            case ShadowOp.Invpcid i: return Result(vm.Invpcid(i.Type, i.Pcid, i.Gva));
            case ShadowOp.GuestAccess a:
                return Result(vm.GuestAccess(a.Access.Gva, PagingVocabulary.ToImpl(a.Access.Type), PagingVocabulary.ToImpl(a.Access.Privilege)));
            case ShadowOp.Invlpg i: return Result(vm.Invlpg(i.Gva));
            case ShadowOp.FlushTlb: return Result(vm.FlushTlb());
            case ShadowOp.ZapRange z: return Result(vm.ZapRange(z.StartGfn, z.EndGfn));
            case ShadowOp.ZapAll: return Result(vm.ZapAll());
            default: throw new ArgumentException($"unknown operation {op}", nameof(op));
        }
    }

    VmResult Result(ImplShadow.ShadowOutcome o) => o.Status switch
    {
        ImplShadow.ShadowStatus.Ok => VmResult.Ok.Instance,
        ImplShadow.ShadowStatus.Rejected => Rejected(),
        ImplShadow.ShadowStatus.Translated => new ShadowResult.Translated(o.Gpa, o.Hpa, o.Faulted),
        ImplShadow.ShadowStatus.MmioExit => new ShadowResult.MmioExit(o.Gpa),
        // The impl, like hardware, gives no #GP reason: FromImpl fills a placeholder, and the comparison ignores it.
        ImplShadow.ShadowStatus.GuestFault => new ShadowResult.GuestFault(PagingVocabulary.FromImpl(o.Fault)),
        _ => throw new InvalidOperationException($"impl returned unknown status {o.Status}"),
    };

    VmResult Slot(ImplMemory.SlotStatus s) => s == ImplMemory.SlotStatus.Ok ? VmResult.Ok.Instance : Rejected();
    VmResult Rejected() => new VmResult.Rejected(vm.LastRejection ?? "(no reason given)");

    /// <summary>The impl's state read into the spec's vocabulary.</summary>
    public ShadowState View()
    {
        var memslots = Memslots();
        var host = ImmutableSortedDictionary.CreateBuilder<ulong, ulong>();
        vm.VisitHostMemory((hpa, value) => { if (value != 0) host[hpa] = value; });
        var guest = GuestCpu();
        var pages = ImmutableSortedDictionary.CreateBuilder<ShadowKey, ShadowPage>();
        vm.VisitPages((info, entries) =>
        {
            var key = Key(info.Key);
            var e = entries.ToImmutableSortedDictionary(x => x.Index, Entry);
            pages[key] = new ShadowPage(key, e, info.Unsync, info.WriteFlooding);
        });
        return new ShadowState(config, memslots, host.ToImmutable(), guest, vm.GuestPcide, pages.ToImmutable(), Roots());
    }

    HostMemslots Memslots()
    {
        var slots = vm.Slots.ToImmutableSortedDictionary(s => s.Id, s => new HostMemslot(
            s.Id, s.BaseGfn, s.Pages, s.HostPfnBase, PageSizes.FromShift(s.HostPageShift), s.ReadOnly, s.DirtyLogging));
        var bitmaps = slots.Values.Where(s => s.DirtyLogging)
            .ToImmutableSortedDictionary(s => s.Id, s => vm.DirtyOffsets(s.Id).ToImmutableSortedSet());
        return new HostMemslots(slots, bitmaps);
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

    ShadowRoots Roots() => new(vm.CurrentRoot is { } current ? RootInfo(current) : null,
        vm.PreviousRoots.Select(RootInfo).ToImmutableList());

    readonly HashSet<ShadowKey> pagesSeen = new();
    readonly HashSet<ulong> wordsSeen = new();

    /// <summary>
    /// Whether <see cref="View"/> would equal <paramref name="spec"/> as the state comparison compares them (the
    /// configuration aside): its common case, read in one pass over the impl's pages and host memory and
    /// compared in place, without building the view. False whenever anything differs or looks odd (a page or
    /// word visited twice), so that the caller reads the full view and reports from it as before. Host memory
    /// is read only where either side changed it since the last agreement (<see cref="HostMemoryComparison"/>),
    /// all of it with <paramref name="fullMemory"/>.
    /// </summary>
    public bool Matches(ShadowState spec, bool fullMemory = false)
    {
        bool? memory = hostMemory.ChangedFramesEqual(spec.HostMemory, fullMemory);
        if (memory == false) return false;
        if (spec.GuestPcide != vm.GuestPcide || !SameGuestCpu(spec.GuestCpu)
            || !SameRoots(spec.Roots) || !MemslotComparison.Same(vm.Slots, vm.DirtyOffsets, spec.Memslots))
            return false;

        pagesSeen.Clear();
        foreach (var (info, entries) in Pages())
        {
            var key = Key(info.Key);
            if (!pagesSeen.Add(key) || !spec.Pages.TryGetValue(key, out var page) || !page.Key.Equals(key)
                || page.Unsync != info.Unsync || page.WriteFlooding != info.WriteFlooding || page.Entries.Count != entries.Count)
                return false;
            foreach (var x in entries)
                if (!page.Entries.TryGetValue(x.Index, out var entry) || !SameEntry(entry, x))
                    return false;
        }
        if (pagesSeen.Count != spec.Pages.Count) return false;
        if (memory == true) return true;

        bool same = true;
        wordsSeen.Clear();
        vm.VisitHostMemory((hpa, value) =>
        {
            if (same && value != 0 && (!wordsSeen.Add(hpa) || !spec.HostMemory.TryGetValue(hpa, out ulong expected) || expected != value))
                same = false;
        });
        if (!same || wordsSeen.Count != spec.HostMemory.Count) return false;
        hostMemory.Agree(spec.HostMemory);
        return true;
    }

    // The impl's pages as one visit read them, kept until the next step: the state comparison and the
    // invariant scan read the same pages, so a step reads them once (VisitPages hands out fresh lists).
    readonly List<(ImplShadow.ShadowPageInfo Info, IReadOnlyList<ImplShadow.ShadowEntryInfo> Entries)> pages = new();
    bool pagesRead;

    /// <summary>Every live page with its present entries, read at most once between two steps.</summary>
    List<(ImplShadow.ShadowPageInfo Info, IReadOnlyList<ImplShadow.ShadowEntryInfo> Entries)> Pages()
    {
        if (pagesRead) return pages;
        pages.Clear();
        vm.VisitPages((info, entries) => pages.Add((info, entries)));
        pagesRead = true;
        return pages;
    }

    /// <summary><c>spec.Equals(Roots())</c> field by field: the in-place comparison builds no root record.</summary>
    bool SameRoots(ShadowRoots spec)
    {
        if (vm.CurrentRoot is { } current ? spec.Current is null || !SameRoot(spec.Current, current) : spec.Current is not null) return false;
        var previous = vm.PreviousRoots;
        if (previous.Count != spec.Previous.Count) return false;
        for (int i = 0; i < previous.Count; i++)
            if (!SameRoot(spec.Previous[i], previous[i])) return false;
        return true;
    }

    static bool SameRoot(ShadowRootInfo spec, ImplShadow.ShadowRootView r)
    {
        if (spec.Pgd != r.Pgd || spec.Unsync != r.Unsync || !spec.Role.Equals(Role(r.Role)) || spec.Root.Pages.Length != r.Pages.Count) return false;
        for (int i = 0; i < r.Pages.Count; i++)
            if (r.Pages[i] is { } key ? spec.Root.Pages[i] is not { } page || page.Gfn != key.Gfn || !page.Role.Equals(Role(key.Role)) : spec.Root.Pages[i] is not null)
                return false;
        return true;
    }

    static ShadowRootInfo RootInfo(ImplShadow.ShadowRootView r) =>
        new(r.Pgd, Role(r.Role), new ShadowRoot(r.Pages.Select(k => k is { } key ? Key(key) : null).ToImmutableArray()), r.Unsync);

    /// <summary><c>entry.Equals(Entry(x))</c> field by field: the in-place comparison builds no record per entry.</summary>
    static bool SameEntry(ShadowEntry entry, ImplShadow.ShadowEntryInfo x) => entry switch
    {
        ShadowEntry.Leaf l => x.IsLeaf && l.Gfn == x.Gfn && l.HostPfn == x.HostPfn && l.Writable == x.SpteWritable
            && l.Rights is { } r && r.User == x.User && r.Writable == x.Writable && r.NoExecute == x.NoExecute && r.ProtectionKey == x.ProtectionKey,
        ShadowEntry.Table t => !x.IsLeaf && t.Child.Gfn == x.Child.Gfn && t.Child.Role.Equals(Role(x.Child.Role)),
        _ => false,
    };

    static ShadowEntry Entry(ImplShadow.ShadowEntryInfo x) => x.IsLeaf
        ? new ShadowEntry.Leaf(x.Gfn, x.HostPfn, new TranslationRights(x.User, x.Writable, x.NoExecute, x.ProtectionKey), x.SpteWritable)
        : new ShadowEntry.Table(Key(x.Child));

    public static ShadowKey Key(ImplShadow.ShadowPageKey k) => new(k.Gfn, Role(k.Role));

    /// <summary>The packed role word, field by field (explicit bit maps: the two sides' ACC bits are independent declarations).</summary>
    public static ShadowRole Role(ImplShadow.ShadowRole r) => new(
        Level: r.Level, Has4ByteGpte: r.Has4ByteGpte, Quadrant: r.Quadrant, Direct: r.Direct,
        Access: ((r.Access & ImplShadow.ShadowRole.AccExec) != 0 ? Acc.Exec : Acc.None)
              | ((r.Access & ImplShadow.ShadowRole.AccWrite) != 0 ? Acc.Write : Acc.None)
              | ((r.Access & ImplShadow.ShadowRole.AccUser) != 0 ? Acc.User : Acc.None),
        Invalid: r.Invalid, EferNx: r.EferNx, Cr0Wp: r.Cr0Wp, SmepAndNotWp: r.SmepAndNotWp, SmapAndNotWp: r.SmapAndNotWp,
        AdDisabled: r.AdDisabled, GuestMode: r.GuestMode, Passthrough: r.Passthrough, Smm: r.Smm);

    /// <summary>
    /// The impl's derived structures against a scan of its own pages (independent of how the
    /// entries are reported as spec values): (a) the reverse map of every gfn holds exactly the
    /// leaves mapping it, (b) every page's parent list exactly the table entries linking it,
    /// (c) every page's unsync-children bitmap exactly the entries whose subtree holds an unsync page;
    /// plus every linked child exists and the page count matches. Empty when consistent.
    /// </summary>
    public ImmutableArray<string> InvariantProblems(int max = 12)
    {
        var problems = ImmutableArray.CreateBuilder<string>();
        void Problem(string p) { if (problems.Count < max) problems.Add(p); else if (problems.Count == max) problems.Add("..."); }

        // The maps live as long as the engine (this runs after every step): cleared here, not after, so a
        // scan that threw leaves nothing behind. A cleared map or set enumerates in insertion order, as a new one.
        var (pageInfo, pageEntries, leavesByGfn, linksByChild) = (scan.PageInfo, scan.PageEntries, scan.LeavesByGfn, scan.LinksByChild);
        scan.Clear();
        foreach (var (info, entries) in Pages())
        {
            if (!pageInfo.TryAdd(info.Key, info)) Problem($"page {info.Key} visited twice");
            pageEntries[info.Key] = entries;
            foreach (var e in entries)
            {
                var at = new ImplShadow.ShadowEntryRef(info.Key, e.Index);
                if (e.IsLeaf)
                {
                    if (info.Key.Role.Level != 1) Problem($"page {info.Key} [{e.Index}]: a leaf above level 1");
                    scan.Set(leavesByGfn, e.Gfn).Add(at);
                }
                else scan.Set(linksByChild, e.Child).Add(at);
            }
        }

        if (vm.ShadowPages != pageInfo.Count) Problem($"ShadowPages says {vm.ShadowPages}, {pageInfo.Count} pages visited");
        foreach (var (child, links) in linksByChild)
            if (!pageInfo.ContainsKey(child)) Problem($"{Refs(links)} link page {child}, which does not exist");
        // The current root, then the previous ones (a loop: boxing each root through LINQ cost a tenth of a shadow step).
        if (vm.CurrentRoot is { } current) RootPagesExist(current);
        foreach (var root in vm.PreviousRoots) RootPagesExist(root);
        void RootPagesExist(ImplShadow.ShadowRootView root)
        {
            foreach (var r in root.Pages)
                if (r is { } k && !pageInfo.ContainsKey(k)) Problem($"root page {k} (of the root for pgd 0x{root.Pgd:X}) does not exist");
        }

        // (a) the reverse map.
        var rmap = scan.Rmap;
        vm.VisitReverseMap((gfn, refs) =>
        {
            var set = scan.Set(rmap, gfn);
            foreach (var r in refs) if (!set.Add(r)) Problem($"rmap of gfn 0x{gfn:X} lists {Ref(r)} twice");
        });
        var gfns = scan.Gfns;
        gfns.AddRange(leavesByGfn.Keys);
        gfns.AddRange(rmap.Keys);
        foreach (ulong gfn in SortedDistinct(gfns, Comparer<ulong>.Default))
        {
            var scanned = leavesByGfn.GetValueOrDefault(gfn) ?? [];
            var listed = rmap.GetValueOrDefault(gfn) ?? [];
            if (scanned.SetEquals(listed)) continue;
            Problem($"rmap of gfn 0x{gfn:X}: missing {Refs(scanned.Except(listed))}, extra {Refs(listed.Except(scanned))}");
        }

        // (b) the parent lists.
        var parents = scan.Parents;
        vm.VisitParents((child, refs) =>
        {
            var set = scan.Set(parents, child);
            foreach (var r in refs) if (!set.Add(r)) Problem($"parent list of {child} lists {Ref(r)} twice");
        });
        var children = scan.Children;
        children.AddRange(linksByChild.Keys);
        children.AddRange(parents.Keys);
        foreach (var child in SortedDistinct(children, ByGfnThenRole))
        {
            var scanned = linksByChild.GetValueOrDefault(child) ?? [];
            var listed = parents.GetValueOrDefault(child) ?? [];
            if (scanned.SetEquals(listed)) continue;
            Problem($"parent list of {child}: missing {Refs(scanned.Except(listed))}, extra {Refs(listed.Except(scanned))}");
        }

        // (c) unsync children: an entry's bit is set iff its child's subtree holds an unsync page.
        var holdsUnsync = scan.HoldsUnsync;
        bool HoldsUnsync(ImplShadow.ShadowPageKey k, int depth)
        {
            if (holdsUnsync.TryGetValue(k, out bool known)) return known;
            if (!pageInfo.TryGetValue(k, out var info) || depth > 8) return false;
            bool result = info.Unsync || pageEntries[k].Any(e => !e.IsLeaf && HoldsUnsync(e.Child, depth + 1));
            holdsUnsync[k] = result;
            return result;
        }
        var pages = scan.Pages;
        pages.AddRange(pageInfo.Keys);
        var (expected, actual) = (scan.Expected, scan.Actual);
        foreach (var key in SortedDistinct(pages, ByGfnThenRole))
        {
            // Both as ascending distinct indexes: equal lists are equal sets, and the report prints them so.
            expected.Clear();
            foreach (var e in pageEntries[key]) if (!e.IsLeaf && HoldsUnsync(e.Child, 1)) expected.Add(e.Index);
            actual.Clear();
            actual.AddRange(pageInfo[key].UnsyncChildren);
            SortedDistinct(expected, Comparer<int>.Default);
            SortedDistinct(actual, Comparer<int>.Default);
            if (expected.SequenceEqual(actual)) continue;
            Problem($"unsync children of {key}: expected [{string.Join(", ", expected)}], bitmap [{string.Join(", ", actual)}]");
        }
        return problems.ToImmutable();
    }

    // Page keys are distinct by (gfn, role word): this order is the one the reports have always used.
    static readonly Comparer<ImplShadow.ShadowPageKey> ByGfnThenRole = Comparer<ImplShadow.ShadowPageKey>.Create((a, b) =>
        a.Gfn != b.Gfn ? a.Gfn.CompareTo(b.Gfn) : a.Role.Word.CompareTo(b.Role.Word));

    /// <summary>Sorts <paramref name="list"/> and drops repeats in place; returns it.</summary>
    static List<T> SortedDistinct<T>(List<T> list, IComparer<T> order)
    {
        list.Sort(order);
        int kept = 0;
        for (int i = 0; i < list.Count; i++)
            if (kept == 0 || order.Compare(list[kept - 1], list[i]) != 0) list[kept++] = list[i];
        list.RemoveRange(kept, list.Count - kept);
        return list;
    }

    readonly InvariantScan scan = new();

    /// <summary>The invariant check's maps and lists, kept between steps; sets come back to a free list.</summary>
    sealed class InvariantScan
    {
        public readonly Dictionary<ImplShadow.ShadowPageKey, ImplShadow.ShadowPageInfo> PageInfo = new();
        public readonly Dictionary<ImplShadow.ShadowPageKey, IReadOnlyList<ImplShadow.ShadowEntryInfo>> PageEntries = new();
        public readonly Dictionary<ulong, HashSet<ImplShadow.ShadowEntryRef>> LeavesByGfn = new(), Rmap = new();
        public readonly Dictionary<ImplShadow.ShadowPageKey, HashSet<ImplShadow.ShadowEntryRef>> LinksByChild = new(), Parents = new();
        public readonly Dictionary<ImplShadow.ShadowPageKey, bool> HoldsUnsync = new();
        public readonly List<ulong> Gfns = new();
        public readonly List<ImplShadow.ShadowPageKey> Children = new(), Pages = new();
        public readonly List<int> Expected = new(), Actual = new();
        readonly Stack<HashSet<ImplShadow.ShadowEntryRef>> free = new();

        public HashSet<ImplShadow.ShadowEntryRef> Set<TKey>(Dictionary<TKey, HashSet<ImplShadow.ShadowEntryRef>> d, TKey key) where TKey : notnull
        {
            if (!d.TryGetValue(key, out var s)) d[key] = s = free.TryPop(out var reused) ? reused : new HashSet<ImplShadow.ShadowEntryRef>();
            return s;
        }

        public void Clear()
        {
            Release(LeavesByGfn); Release(Rmap); Release(LinksByChild); Release(Parents);
            PageInfo.Clear(); PageEntries.Clear(); HoldsUnsync.Clear();
            Gfns.Clear(); Children.Clear(); Pages.Clear();
        }

        void Release<TKey>(Dictionary<TKey, HashSet<ImplShadow.ShadowEntryRef>> d) where TKey : notnull
        {
            foreach (var s in d.Values) { s.Clear(); free.Push(s); }
            d.Clear();
        }
    }

    static string Ref(ImplShadow.ShadowEntryRef r) => $"{r.Page}[{r.Index}]";
    static string Refs(IEnumerable<ImplShadow.ShadowEntryRef> refs)
    {
        var list = refs.Select(Ref).ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list);
    }

    public void Dispose() => vm.Dispose();
}
