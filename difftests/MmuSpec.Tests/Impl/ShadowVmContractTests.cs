using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Shadow;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The impl's shadow VM as an API (IShadowVm): a destroyed VM refuses every call that would touch its
/// freed native pages, null arguments are refused, destroying twice is harmless, and bad input is
/// rejected without changing anything; the root counters count what they say. The differential properties
/// never call a destroyed VM, pass null, read the counters or (for most of these) make such input, so
/// nothing else checks it.
/// </summary>
public sealed class ShadowVmContractTests
{
    static PagingControls Long4 => new(PagingMode.Long4, Cr0Wp: true, Cr4Pse: false, Cr4Smep: false, Cr4Smap: false,
        Cr4Pke: false, EferNxe: true, EflagsAc: false, Pkru: 0, MaxPhyAddr: 46);

    /// <summary>One slot over gfns 0..0xFF, 4-level paging with CR3 0x1000 and gva 0x1000 mapped to gpa 0x5000, accessed once.</summary>
    static IShadowVm MappedVm(NativePagePool pool)
    {
        var vm = ShadowVm.Create(46, allowUnsync: true, pool);
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x100, 0x1000, readOnly: false));
        Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x1000, 0x2007, 8).Status);
        Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x2000, 0x3007, 8).Status);
        Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x3000, 0x4007, 8).Status);
        Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x4008, 0x5007, 8).Status);
        Assert.Equal(ShadowStatus.Ok, vm.GuestSetPaging(Long4, 0x1000, pcide: true).Status);
        ShadowOutcome access = vm.GuestAccess(0x1000, AccessType.Write, Privilege.User);
        Assert.Equal(ShadowOutcome.Translated(0x5000, 0x5000 + (0x1000UL << 12), faulted: true), access);
        return vm;
    }

    static readonly Dictionary<string, Action<IShadowVm>> CallsOn = new()
    {
        ["CreateSlot"] = vm => vm.CreateSlot(1, 0x1000, 1, 0x9000, readOnly: false),
        ["DeleteSlot"] = vm => vm.DeleteSlot(0),
        ["MoveSlot"] = vm => vm.MoveSlot(0, 0x4000),
        ["SetDirtyLogging"] = vm => vm.SetDirtyLogging(0, true),
        ["GetDirtyLog"] = vm => vm.GetDirtyLog(0, []),
        ["ZapRange"] = vm => vm.ZapRange(0, 0x100),
        ["ZapAll"] = vm => vm.ZapAll(),
        ["GuestStore"] = vm => vm.GuestStore(0x6000, 1, 8),
        ["GuestSetPaging"] = vm => vm.GuestSetPaging(Long4, 0x1000),
        ["GuestMovCr3"] = vm => vm.GuestMovCr3(0x1000),
        ["Invpcid"] = vm => vm.Invpcid(2, 0, 0),
        ["GuestAccess"] = vm => vm.GuestAccess(0x1000, AccessType.Read, Privilege.User),
        ["Invlpg"] = vm => vm.Invlpg(0x1000),
        ["FlushTlb"] = vm => vm.FlushTlb(),
        ["VisitHostMemory"] = vm => vm.VisitHostMemory((_, _) => { }),
        ["RootKeys"] = vm => _ = vm.RootKeys,
        ["CurrentRoot"] = vm => _ = vm.CurrentRoot,
        ["PreviousRoots"] = vm => _ = vm.PreviousRoots,
        ["VisitPages"] = vm => vm.VisitPages((_, _) => { }),
        ["VisitReverseMap"] = vm => vm.VisitReverseMap((_, _) => { }),
        ["VisitParents"] = vm => vm.VisitParents((_, _) => { }),
    };

    public static TheoryData<string> Calls() => [.. CallsOn.Keys];

    [Theory]
    [MemberData(nameof(Calls))]
    public void A_destroyed_vm_refuses_the_call(string call)
    {
        var pool = new NativePagePool();
        var vm = MappedVm(pool);
        CallsOn[call](vm);                  // works while the VM lives
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
        Assert.Throws<ObjectDisposedException>(() => CallsOn[call](vm));
        vm.Dispose();                       // a second destroy does nothing
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void Null_arguments_are_refused()
    {
        var pool = new NativePagePool();
        using (var vm = MappedVm(pool))
        {
            Assert.Throws<ArgumentNullException>(() => vm.GetDirtyLog(0, null!));
            Assert.Throws<ArgumentNullException>(() => vm.VisitHostMemory(null!));
            Assert.Throws<ArgumentNullException>(() => vm.VisitPages(null!));
            Assert.Throws<ArgumentNullException>(() => vm.VisitReverseMap(null!));
            Assert.Throws<ArgumentNullException>(() => vm.VisitParents(null!));
        }
        Assert.Throws<ArgumentNullException>(() => ShadowVm.Create(46, allowUnsync: true, null!));
        Assert.Equal(0, pool.PagesInUse);
    }

    static readonly Dictionary<string, Func<IShadowVm, ShadowOutcome>> BadInput = new()
    {
        ["slot id past the table"] = vm => Slot(vm.CreateSlot(32, 0x1000, 1, 0x9000, readOnly: false)),
        ["negative slot id"] = vm => Slot(vm.CreateSlot(-1, 0x1000, 1, 0x9000, readOnly: false)),
        ["slot id taken"] = vm => Slot(vm.CreateSlot(0, 0x1000, 1, 0x9000, readOnly: false)),
        ["empty slot"] = vm => Slot(vm.CreateSlot(1, 0x1000, 0, 0x9000, readOnly: false)),
        ["slot beyond MAXPHYADDR"] = vm => Slot(vm.CreateSlot(1, (1UL << 34) - 1, 2, 0x9000, readOnly: false)),
        ["overlapping slot"] = vm => Slot(vm.CreateSlot(1, 0xFF, 2, 0x9000, readOnly: false)),
        ["overlapping host frames"] = vm => Slot(vm.CreateSlot(1, 0x1000, 2, 0x10FF, readOnly: false)),
        ["host frames beyond 2^40"] = vm => Slot(vm.CreateSlot(1, 0x1000, 2, (1UL << 40) - 1, readOnly: false)),
        ["unknown slot deleted"] = vm => Slot(vm.DeleteSlot(32)),
        ["unknown slot moved"] = vm => Slot(vm.MoveSlot(5, 0x4000)),
        ["slot moved beyond MAXPHYADDR"] = vm => Slot(vm.MoveSlot(0, 1UL << 34)),
        ["dirty log of a quiet slot"] = vm => Slot(vm.GetDirtyLog(0, [])),
        ["empty zap"] = vm => vm.ZapRange(0x10, 0x10),
        ["zap beyond MAXPHYADDR"] = vm => vm.ZapRange(0, (1UL << 34) + 1),
        ["store of 2 bytes"] = vm => vm.GuestStore(0x6000, 1, 2),
        ["misaligned store"] = vm => vm.GuestStore(0x6004, 1, 8),
        ["store beyond MAXPHYADDR"] = vm => vm.GuestStore(1UL << 46, 1, 8),
        ["unknown paging mode"] = vm => vm.GuestSetPaging(Long4 with { Mode = (PagingMode)9 }, 0x1000),
        ["another MAXPHYADDR"] = vm => vm.GuestSetPaging(Long4 with { MaxPhyAddr = 40 }, 0x1000),
        ["protection keys"] = vm => vm.GuestSetPaging(Long4 with { Cr4Pke = true }, 0x1000),
        ["wide CR3 in PAE"] = vm => vm.GuestSetPaging(Long4 with { Mode = PagingMode.Pae }, 0x1_0000_0000),
        ["PCIDE in PAE"] = vm => vm.GuestSetPaging(Long4 with { Mode = PagingMode.Pae }, 0x1000, pcide: true),
        ["unknown access type"] = vm => vm.GuestAccess(0x1000, (AccessType)3, Privilege.User),
        ["unknown privilege"] = vm => vm.GuestAccess(0x1000, AccessType.Read, (Privilege)3),
        ["fetch as an implicit supervisor access"] = vm => vm.GuestAccess(0x1000, AccessType.Fetch, Privilege.ImplicitSupervisor),
    };

    public static TheoryData<string> BadInputs() => [.. BadInput.Keys];

    /// <summary>Bad input is rejected with a reason and changes nothing: slots, pages, roots and host memory read back the same.</summary>
    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_is_rejected_and_changes_nothing(string input)
    {
        var pool = new NativePagePool();
        using (var vm = MappedVm(pool))
        {
            string before = Snapshot(vm);
            ShadowOutcome outcome = BadInput[input](vm);
            Assert.Equal(ShadowStatus.Rejected, outcome.Status);
            Assert.False(string.IsNullOrWhiteSpace(vm.LastRejection));
            Assert.Equal(before, Snapshot(vm));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void Guest_operations_need_paging_on()
    {
        using var vm = ShadowVm.Create(46, allowUnsync: false, new NativePagePool());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x100, 0x1000, readOnly: false));
        foreach (ShadowOutcome o in new[]
        {
            vm.GuestMovCr3(0x1000), vm.Invpcid(2, 0, 0), vm.GuestAccess(0x1000, AccessType.Read, Privilege.User),
            vm.Invlpg(0x1000), vm.FlushTlb(),
        })
        {
            Assert.Equal(ShadowStatus.Rejected, o.Status);
            Assert.Equal("paging is off", vm.LastRejection);
        }
        Assert.Null(vm.RootKeys);
        Assert.Null(vm.CurrentRoot);
    }

    /// <summary>
    /// The other side of the bad-input bounds: a slot may end exactly at 2^(MAXPHYADDR-12) guest frames
    /// and at 2^40 host frames, a store may hit the last word below 2^MAXPHYADDR, and a zap may end at the
    /// gfn limit.
    /// </summary>
    [Fact]
    public void Ranges_ending_exactly_at_the_frame_limits_are_accepted()
    {
        const ulong gfnLimit = 1UL << 34, hostPfnLimit = 1UL << 40; // MAXPHYADDR 46
        var pool = new NativePagePool();
        using (var vm = MappedVm(pool))
        {
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, gfnLimit - 1, 1, hostPfnLimit - 1, readOnly: false));
            Assert.Equal(ShadowStatus.Ok, vm.GuestStore((1UL << 46) - 8, 0x55, 8).Status);
            var words = new Dictionary<ulong, ulong>();
            vm.VisitHostMemory((hpa, value) => words.Add(hpa, value));
            Assert.Equal(0x55UL, words[(hostPfnLimit << 12) - 8]);
            Assert.Equal(ShadowStatus.Ok, vm.ZapRange(gfnLimit - 1, gfnLimit).Status);
            Assert.Equal(SlotStatus.Ok, vm.MoveSlot(1, gfnLimit - 2));
            Assert.Equal(SlotStatus.Ok, vm.MoveSlot(1, gfnLimit - 1));
            Assert.Equal(new HostMemslotInfo(1, gfnLimit - 1, 1, hostPfnLimit - 1, 12, false, false), vm.Slots[1]);
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// More live pages than the page hash's 64 initial buckets (the random sequences stay below): 100 page
    /// tables under one directory. After the hash has grown every page is still found by its key (the
    /// read-back checks each one) and every mapping still hits.
    /// </summary>
    [Fact]
    public void A_hundred_page_tables_grow_the_page_hash_and_every_page_stays_found()
    {
        const int tables = 100;
        // Every PT's entry 0 maps gfn 0x1FF, host frame 0x1000 + 0x1FF.
        static ShadowOutcome DataPage(bool faulted) => ShadowOutcome.Translated(0x1FF000, 0x1FF000 + (0x1000UL << 12), faulted);
        var pool = new NativePagePool();
        using (var vm = ShadowVm.Create(46, allowUnsync: false, pool))
        {
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x200, 0x1000, readOnly: false));
            Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x1000, 0x2007, 8).Status);          // PML4[0] -> PDPT
            Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x2000, 0x3007, 8).Status);          // PDPT[0] -> PD
            for (ulong i = 0; i < tables; i++)
            {
                ulong pt = 0x100 + i;
                Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x3000 + i * 8, pt << 12 | 7, 8).Status); // PD[i] -> PT i
                Assert.Equal(ShadowStatus.Ok, vm.GuestStore(pt << 12, 0x1FF067, 8).Status);            // PT i [0] -> gfn 0x1FF
            }
            Assert.Equal(ShadowStatus.Ok, vm.GuestSetPaging(Long4, 0x1000).Status);
            for (ulong i = 0; i < tables; i++)
                Assert.Equal(DataPage(faulted: true), vm.GuestAccess(i << 21, AccessType.Read, Privilege.User));
            Assert.Equal(3 + tables, vm.ShadowPages);
            int visited = 0;
            vm.VisitPages((_, _) => visited++); // throws for a live page its key does not find
            Assert.Equal(3 + tables, visited);
            for (ulong i = 0; i < tables; i++)
                Assert.Equal(DataPage(faulted: false), vm.GuestAccess(i << 21, AccessType.Read, Privilege.User));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void Bookkeeping_sizes_are_the_documented_ones()
    {
        Assert.Equal(16, ShadowVm.RootInfoBytes);                   // pgd word + root pointer
        Assert.Equal(24, ShadowVm.DirectPageHeaderBytes);           // key and flags, parent list head, hash link
        Assert.Equal(24 + 4096 + 72, ShadowVm.IndirectPageBytes);   // + translations page + unsync bitmap and counts
    }

    /// <summary>
    /// RootStats (read by the cached-root benchmarks, compared by no property): each counter moves by
    /// exactly the events its documentation names, and by nothing else.
    /// </summary>
    [Fact]
    public void Root_stats_count_builds_cached_switches_resyncs_frees_and_created_pages()
    {
        const ulong noFlush = 1UL << 63;
        var pool = new NativePagePool();
        using (var vm = MappedVm(pool))
        {
            // MappedVm: one root built (the PML4 page at gfn 1), the fill created the PDPT, PD and PT pages.
            Assert.Equal(new ShadowRootStats(Builds: 1, CachedSwitches: 0, Resyncs: 0, Freed: 0, PagesCreated: 4), vm.RootStats);

            // A miss: A (PCID 0) becomes previous, B (CR3 0x6000, PCID 1, an empty PML4) is built.
            Assert.Equal(ShadowStatus.Ok, vm.GuestMovCr3(0x6000 | 1).Status);
            Assert.Equal(new ShadowRootStats(2, 0, 0, 0, 5), vm.RootStats);
            // A switch to the current root is no switch.
            Assert.Equal(ShadowStatus.Ok, vm.GuestMovCr3(0x6000 | 1 | noFlush).Status);
            Assert.Equal(new ShadowRootStats(2, 0, 0, 0, 5), vm.RootStats);

            // A's PT (gfn 4) goes unsync, INVPCID flushes PCID 0: A is flagged, and the NOFLUSH switch back
            // to it is served by the cache and re-syncs it.
            Assert.Equal(ShadowStatus.Ok, vm.GuestStore(0x4010, 0x5007, 8).Status);
            Assert.Equal(ShadowStatus.Ok, vm.Invpcid(1, 0, 0).Status);
            Assert.True(vm.PreviousRoots[0].Unsync, "A is kept and flagged under KeepAndResync");
            Assert.Equal(ShadowStatus.Ok, vm.Invpcid(1, 0, 0).Status);
            Assert.True(vm.PreviousRoots[0].Unsync, "a second flush leaves the flag set");
            Assert.Equal(ShadowStatus.Ok, vm.GuestMovCr3(0x1000 | noFlush).Status);
            Assert.Equal(new ShadowRootStats(2, 1, 1, 0, 5), vm.RootStats);
            ShadowPageKey rootKey = Assert.Single(vm.RootKeys!)!.Value;
            Assert.Equal(1UL, rootKey.Gfn);                       // A's PML4
            Assert.Equal(vm.CurrentRoot!.Value.Pages, vm.RootKeys!);

            // Zap all frees both roots (pages are not counted down); the next access rebuilds A's path.
            Assert.Equal(ShadowStatus.Ok, vm.ZapAll().Status);
            Assert.Equal(new ShadowRootStats(2, 1, 1, 2, 5), vm.RootStats);
            Assert.Equal(ShadowStatus.Translated, vm.GuestAccess(0x1000, AccessType.Read, Privilege.User).Status);
            Assert.Equal(new ShadowRootStats(3, 1, 1, 2, 9), vm.RootStats);
            Assert.Equal(4, vm.ShadowPages);
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// Both MMUs keep their memslots in one table (impl/Memory): the same slot operations return the same
    /// <see cref="SlotStatus"/>, with the same reasons, the same slots read back and the same dirty log.
    /// </summary>
    [Fact]
    public void Tdp_and_shadow_apply_the_same_memslot_rules()
    {
        var pool = new NativePagePool();
        using (var shadow = ShadowVm.Create(46, allowUnsync: true, pool))
        using (var tdp = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, pool))
        {
            var steps = new (string What, Func<IShadowVm, SlotStatus> Shadow, Func<ITdpVm, SlotStatus> Tdp)[]
            {
                ("create 0", v => v.CreateSlot(0, 0x10, 4, 0x100, readOnly: false), v => v.CreateSlot(0, 0x10, 4, 0x100, 12, readOnly: false)),
                ("create 1", v => v.CreateSlot(1, 0x20, 2, 0x200, readOnly: true), v => v.CreateSlot(1, 0x20, 2, 0x200, 12, readOnly: true)),
                ("id 32", v => v.CreateSlot(32, 0x40, 1, 0x400, readOnly: false), v => v.CreateSlot(32, 0x40, 1, 0x400, 12, readOnly: false)),
                ("id taken", v => v.CreateSlot(0, 0x40, 1, 0x400, readOnly: false), v => v.CreateSlot(0, 0x40, 1, 0x400, 12, readOnly: false)),
                ("no pages", v => v.CreateSlot(2, 0x40, 0, 0x400, readOnly: false), v => v.CreateSlot(2, 0x40, 0, 0x400, 12, readOnly: false)),
                ("gfns overlap", v => v.CreateSlot(2, 0x13, 2, 0x400, readOnly: false), v => v.CreateSlot(2, 0x13, 2, 0x400, 12, readOnly: false)),
                ("host frames overlap", v => v.CreateSlot(2, 0x40, 2, 0x201, readOnly: false), v => v.CreateSlot(2, 0x40, 2, 0x201, 12, readOnly: false)),
                ("move onto 1", v => v.MoveSlot(0, 0x1F), v => v.MoveSlot(0, 0x1F)),
                ("move", v => v.MoveSlot(0, 0x30), v => v.MoveSlot(0, 0x30)),
                ("no log", v => v.GetDirtyLog(0, []), v => v.GetDirtyLog(0, [])),
                ("no slot", v => v.SetDirtyLogging(5, true), v => v.SetDirtyLogging(5, true)),
                ("log on", v => v.SetDirtyLogging(0, true), v => v.SetDirtyLogging(0, true)),
                ("store", v => Status(v.GuestStore(0x32008, 0xAB, 8)), v => Status(v.GuestStore(0x32008, 0xAB, 8))),
                ("delete 1", v => v.DeleteSlot(1), v => v.DeleteSlot(1)),
                ("delete 1 again", v => v.DeleteSlot(1), v => v.DeleteSlot(1)),
            };
            List<string> shadowSays = [], tdpSays = [];
            foreach (var (what, onShadow, onTdp) in steps)
            {
                SlotStatus onBoth = onShadow(shadow);
                Assert.Equal(onBoth, onTdp(tdp));
                shadowSays.Add(onBoth == SlotStatus.Ok ? $"{what}: ok" : $"{what}: {shadow.LastRejection}");
                tdpSays.Add(onBoth == SlotStatus.Ok ? $"{what}: ok" : $"{what}: {tdp.LastRejection}");
            }
            Assert.Equal(
            [
                "create 0: ok", "create 1: ok", "id 32: slot id 32 is outside 0..31", "id taken: slot 0 already exists",
                "no pages: a slot needs at least one page", "gfns overlap: range [0x13, 0x15) overlaps slot 0",
                "host frames overlap: host frames [0x201, 0x203) overlap slot 1's", "move onto 1: range [0x1F, 0x23) overlaps slot 1",
                "move: ok", "no log: slot 0 does not log dirty pages", "no slot: no slot 5", "log on: ok", "store: ok",
                "delete 1: ok", "delete 1 again: no slot 1",
            ], shadowSays);
            Assert.Equal(shadowSays, tdpSays);
            Assert.Equal([new HostMemslotInfo(0, 0x30, 4, 0x100, 12, false, true)], shadow.Slots);
            Assert.Equal(shadow.Slots, tdp.Slots);
            List<ulong> shadowLog = [], tdpLog = [];
            Assert.Equal(SlotStatus.Ok, shadow.GetDirtyLog(0, shadowLog));
            Assert.Equal(SlotStatus.Ok, tdp.GetDirtyLog(0, tdpLog));
            Assert.Equal([0x32UL], shadowLog);
            Assert.Equal(shadowLog, tdpLog);
            Assert.Empty(shadow.DirtyOffsets(0));
            Assert.Empty(tdp.DirtyOffsets(0));
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// One result type for memslot operations on both MMUs: every slot operation of either VM interface
    /// returns <see cref="SlotStatus"/> (the list is checked against the interfaces, so a new slot operation
    /// that returns something else fails here).
    /// </summary>
    [Fact]
    public void Both_VMs_return_one_slot_status_from_every_memslot_operation()
    {
        string[] slotOperations = ["CreateSlot", "DeleteSlot", "MoveSlot", "SetDirtyLogging", "GetDirtyLog"];
        foreach (Type vm in new[] { typeof(ITdpVm), typeof(IShadowVm) })
        {
            var returns = vm.GetMethods()
                .Where(m => m.Name.Contains("Slot", StringComparison.Ordinal) || m.Name.Contains("Dirty", StringComparison.Ordinal))
                .Where(m => m.Name != nameof(IShadowVm.DirtyOffsets) && !m.IsSpecialName)
                .ToDictionary(m => m.Name, m => m.ReturnType);
            Assert.Equal(slotOperations.Order(), returns.Keys.Order());
            Assert.All(returns, r => Assert.True(r.Value == typeof(SlotStatus), $"{vm.Name}.{r.Key} returns {r.Value.Name}"));
        }
    }

    /// <summary>A memslot operation's status as the outcome other shadow operations return.</summary>
    static ShadowOutcome Slot(SlotStatus status) => status == SlotStatus.Ok ? ShadowOutcome.Ok : ShadowOutcome.Rejected;

    static SlotStatus Status(TdpAccessOutcome outcome) => outcome.Status == TdpAccessStatus.Rejected ? SlotStatus.Rejected : SlotStatus.Ok;
    static SlotStatus Status(ShadowOutcome outcome) => outcome.Status == ShadowStatus.Rejected ? SlotStatus.Rejected : SlotStatus.Ok;

    static string Snapshot(IShadowVm vm)
    {
        var text = new List<string>();
        text.Add(string.Join(" ", vm.Slots));
        text.Add($"{vm.GuestControls} cr3 0x{vm.GuestCr3:X} pcide {vm.GuestPcide}");
        text.Add($"root {string.Join(",", vm.RootKeys ?? [])} {vm.CurrentRoot?.Pgd:X} | previous "
            + string.Join(" ", vm.PreviousRoots.Select(r => $"{r.Pgd:X} {r.Role} {string.Join(",", r.Pages)} {r.Unsync}")));
        vm.VisitPages((page, entries) => text.Add(
            $"{page.Key} unsync {page.Unsync} flooding {page.WriteFlooding} children {string.Join(",", page.UnsyncChildren)}: {string.Join(" ", entries)}"));
        vm.VisitReverseMap((gfn, leaves) => text.Add($"rmap {gfn:X}: {string.Join(" ", leaves)}"));
        vm.VisitParents((key, parents) => text.Add($"parents {key}: {string.Join(" ", parents)}"));
        vm.VisitHostMemory((hpa, value) => text.Add($"{hpa:X}={value:X}"));
        return string.Join("\n", text);
    }
}
