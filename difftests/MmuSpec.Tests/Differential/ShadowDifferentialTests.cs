using System.Diagnostics;
using System.Collections.Immutable;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using Xunit;
using Xunit.Abstractions;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Oracle 1 and 2 for the shadow MMU: random operation sequences over guests with page-table
/// forests for several address spaces (entry edits, write flooding, INVLPG, CR3 switches, control
/// and mode changes, memslot changes, dirty logging, zaps) run on the spec's model and the impl,
/// results, abstract state and the impl's derived structures compared after every step, every
/// result judged by the architecture layer.
/// </summary>
public sealed class ShadowDifferentialTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    [Theory]
    [MemberData(nameof(RegisteredProperties.ShadowMmus), MemberType = typeof(RegisteredProperties))]
    public void Spec_and_impl_shadow_MMUs_agree_after_every_operation(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);   // its TestCases: the quick tier's count (MMUSPEC_MAX_TEST overrides)
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }

    [Fact]
    public void Every_native_page_of_a_shadow_vm_is_freed_when_it_is_disposed()
    {
        var pool = new NativePagePool();
        for (int seed = 0; seed < 30; seed++)
        {
            var c = ShadowGen.Build(seed, size: 40, new ShadowGenOptions(null, Mixed: seed % 2 == 0));
            using (var engine = new ImplShadowEngine(c.Config, pool))
            {
                foreach (var op in c.AllOps) engine.Step(op);
                Assert.True(pool.PagesInUse > 0, "a VM with memslots and shadow pages holds native pages");
            }
            Assert.Equal(0, pool.PagesInUse);
        }
        Assert.Equal(pool.PagesAllocated, pool.PagesFreed);
    }

    [Fact]
    public void Generated_setups_are_valid_and_turn_paging_on()
    {
        for (int seed = 0; seed < 40; seed++)
        {
            var c = ShadowGen.Build(seed, size: 50, new ShadowGenOptions((PagingMode)(seed % 4)));
            var state = ShadowState.Create(c.Config);
            foreach (var op in c.Setup)
            {
                var stepped = state.Step(op);
                Assert.False(stepped.Result is VmResult.Rejected, $"seed {seed}: setup op '{op}' was rejected: {stepped.Result}");
                state = stepped.State;
            }
            Assert.NotNull(state.GuestCpu);
            Assert.Equal((PagingMode)(seed % 4), state.GuestCpu!.Controls.Mode);
            Assert.NotNull(state.Root);
        }
    }

    /// <summary>The rules the generator must keep reaching (measured on the spec alone, from its states before and after each step).</summary>
    static readonly string[] RequiredRules =
    [
        "access: hit", "access: fill", "GuestAccess fault #PF", "GuestAccess fault #GP", "GuestSetPaging fault #GP",
        "op GuestAccess -> MmioExit", "op GuestStore -> MmioExit", "dirty log: non-empty",
        "page created: direct L1", "page created: direct L1 q1", "page created: direct L2", "page created: indirect L1 4B q>0",
        "page created: narrowed access role", "state: one guest table, several roles", "root: PAE entry none",
        "unsync: by GuestStore", "unsync: by GuestAccess (write fill)", "resync page: by FlushTlb", "resync page: by GuestAccess",
        "entry removed: by Invlpg (sync)", "entry removed: by GuestStore", "entry removed: by ZapRange",
        "write flooding count 2", "write flooding reset by a walk", "page zapped: write flooding", "page zapped: misaligned store",
        "page zapped: unsync page used as upper-level table", "GuestStore: root dropped",
        "leaf write-protected: by SetDirtyLogging", "leaf write-protected: by GetDirtyLog", "leaf write-protected: by GuestAccess",
        "fill: read-only leaf (write-protected, clean, read-only slot or logging)", "fill: write left the leaf read-only (emulated)",
        "set paging: mode or PSE changed (zap all)", "DeleteSlot: root dropped", "MoveSlot: root dropped", "ZapAll: root dropped",
        "#PF invalidation: stale unsync entry synced away", "direct link replaced (other rights, e.g. the large page became dirty)",
    ];

    [Fact]
    public void The_generator_reaches_every_rule_of_the_contract()
    {
        var counts = new SortedDictionary<string, int>();
        foreach (var options in new[] { new ShadowGenOptions(PagingMode.Bits32), new ShadowGenOptions(PagingMode.Pae), new ShadowGenOptions(PagingMode.Long4),
                     new ShadowGenOptions(PagingMode.Long5), new ShadowGenOptions(null, Mixed: true), new ShadowGenOptions(null, AllowUnsync: false) })
            foreach (var (rule, n) in ShadowCoverage.Measure(options, cases: 40))
                counts[rule] = counts.GetValueOrDefault(rule) + n;
        foreach (var (rule, n) in counts) output.WriteLine($"{n,7}  {rule}");
        var missing = RequiredRules.Where(r => !counts.ContainsKey(r)).ToList();
        Assert.True(missing.Count == 0, $"the generator no longer reaches: {string.Join(", ", missing)}");
    }

    // ---- hand-written scenarios, run on both sides (and compared), with concrete expectations ----

    const ulong P = 1, W = 2, U = 4, A = 1 << 5, D = 1 << 6, PS = 1 << 7;
    const ulong RamGfn = 0x100, DataGfn = 0x400, RamHostPfn = 0x5000, DataHostPfn = 0x8000;

    static readonly ShadowOp[] Slots =
    [
        new ShadowOp.CreateSlot(0, RamGfn, 16, RamHostPfn, ReadOnly: false),
        new ShadowOp.CreateSlot(1, DataGfn, 1024, DataHostPfn, ReadOnly: false),
    ];

    static ShadowOp Store(ulong gpa, ulong value, int size) => new ShadowOp.GuestStore(gpa, value, size);
    static ShadowOp Read(ulong gva) => new ShadowOp.GuestAccess(Access.Read(gva));
    static ShadowOp Write(ulong gva) => new ShadowOp.GuestAccess(Access.Write(gva));

    /// <summary>Runs the ops on the spec and the impl, asserting equal results and states at every step; returns both sides' states and results.</summary>
    internal static (List<ShadowState> States, List<VmResult> Results) RunBoth(ShadowConfig config, params ShadowOp[] ops)
    {
        var states = new List<ShadowState>();
        var results = new List<VmResult>();
        var pool = new NativePagePool();
        var spec = ShadowState.Create(config);
        var tlb = ShadowTlb.Start(spec);
        using (var impl = new ImplShadowEngine(config, pool))
        {
            for (int i = 0; i < ops.Length; i++)
            {
                var stepped = spec.Step(ops[i]);
                spec = stepped.State;
                var implResult = impl.Step(ops[i]);
                Assert.True(ShadowDiff.Describe(stepped.Result) == ShadowDiff.Describe(implResult),
                    $"step {i + 1} ({ops[i]}): spec {stepped.Result} / impl {implResult}");
                var diffs = ShadowDiff.Differences(spec, impl.View());
                Assert.True(diffs.IsEmpty, $"step {i + 1} ({ops[i]}): state difference:\n{string.Join("\n", diffs)}");
                var problems = impl.InvariantProblems();
                Assert.True(problems.IsEmpty, $"step {i + 1} ({ops[i]}): impl invariant:\n{string.Join("\n", problems)}");
                Assert.Null(tlb.Violation(ops[i], stepped.Result, spec));
                tlb = tlb.Record(ops[i], stepped.Result, spec);
                states.Add(spec);
                results.Add(stepped.Result);
            }
        }
        Assert.Equal(0, pool.PagesInUse);
        return (states, results);
    }

    static ShadowPage PageOf(ShadowState s, ulong gfn, Func<ShadowRole, bool> role) =>
        Assert.Single(s.Pages.Values, p => p.Key.Gfn == gfn && role(p.Key.Role));

    [Fact]
    public void A_32bit_guests_4MiB_page_is_split_by_two_direct_level1_pages_with_quadrants_0_and_1()
    {
        var c = new PagingControls(PagingMode.Bits32, cr4Pse: true, maxPhyAddr: 40);
        // PD at gfn 0x100; PDE 3 maps the 4 MiB page at gpa 0x400000 (gva 0xC00000..0xFFFFFF).
        var (states, results) = RunBoth(new ShadowConfig(40),
        [
            .. Slots,
            Store(0x10_000C, 0x40_0000 | PS | A | D | U | W | P, 4),
            new ShadowOp.GuestSetPaging(c, 0x10_0000),
            Read(0xC0_1234),     // shadow L2 index 6 (gva bit 21 clear): quadrant 0
            Read(0xE0_5678),     // shadow L2 index 7 (gva bit 21 set): quadrant 1
            Read(0xE0_5678),     // now a hit
        ]);
        var after = states[^1];
        Assert.Equal(new ShadowResult.Translated(0x40_1234, ((DataHostPfn + 0x1) << 12) | 0x234, Faulted: true), results[4]);
        Assert.Equal(new ShadowResult.Translated(0x60_5678, ((DataHostPfn + 0x205) << 12) | 0x678, Faulted: true), results[5]);
        Assert.Equal(new ShadowResult.Translated(0x60_5678, ((DataHostPfn + 0x205) << 12) | 0x678, Faulted: false), results[6]);

        // Four root pages for the PD (quadrants 0..3), two direct level-1 pages carrying the large page's first gfn.
        Assert.Equal(6, after.Pages.Count);
        Assert.Equal(4, after.Pages.Values.Count(p => p.Key.Gfn == RamGfn && p.Key.Role is { Level: 2, Has4ByteGpte: true, Direct: false }));
        var q0 = PageOf(after, 0x400, r => r is { Level: 1, Direct: true, Quadrant: 0, Has4ByteGpte: true });
        var q1 = PageOf(after, 0x400, r => r is { Level: 1, Direct: true, Quadrant: 1, Has4ByteGpte: true });
        var leaf0 = Assert.IsType<ShadowEntry.Leaf>(Assert.Single(q0.Entries, e => e.Key == 1).Value);
        var leaf1 = Assert.IsType<ShadowEntry.Leaf>(Assert.Single(q1.Entries, e => e.Key == 5).Value);
        Assert.Equal(0x401UL, leaf0.Gfn);
        Assert.Equal(0x605UL, leaf1.Gfn);
        Assert.Equal(0x401UL, ShadowState.DirectGfn(q0.Key, 1));
        Assert.Equal(0x605UL, ShadowState.DirectGfn(q1.Key, 5));
        // The root page of quadrant 0 links both, from entries 6 and 7 (one 4 MiB PDE = two shadow entries).
        var root0 = PageOf(after, RamGfn, r => r is { Level: 2, Quadrant: 0 });
        Assert.Equal(new ShadowEntry.Table(q0.Key), root0.Entries[6]);
        Assert.Equal(new ShadowEntry.Table(q1.Key), root0.Entries[7]);
    }

    [Fact]
    public void A_PAE_guest_has_four_root_entries_from_its_PDPTE_registers()
    {
        var c = new PagingControls(PagingMode.Pae, maxPhyAddr: 40);
        // PDPT at 0x100000: PDPTE 0 and 3 -> PD 0x101000, PDPTE 1 not present, PDPTE 2 -> PD 0x102000.
        var (states, results) = RunBoth(new ShadowConfig(40),
        [
            .. Slots,
            Store(0x10_0000, 0x10_1000 | P, 8),
            Store(0x10_0010, 0x10_2000 | P, 8),
            Store(0x10_0018, 0x10_1000 | P, 8),
            new ShadowOp.GuestSetPaging(c, 0x10_0000),
            Read(0x4000_0000),                         // PDPTE 1: not present
            Store(0x10_0008, 0x10_2000 | P, 8),        // no effect until CR3 is loaded again
            Read(0x4000_0000),
        ]);
        var root = states[5].Root!;
        var pd1 = new ShadowKey(0x101, ShadowRole.Base(c).WithLevel(2));
        var pd2 = new ShadowKey(0x102, ShadowRole.Base(c).WithLevel(2));
        Assert.Equal(new ShadowRoot([pd1, null, pd2, pd1]), root);
        Assert.Equal(2, states[5].Pages.Count);
        var fault = Assert.IsType<ShadowResult.GuestFault>(results[6]);
        Assert.Equal(new WalkResult.PageFault(PageFaultErrorCode.None), fault.Fault);
        Assert.Equal(results[6], results[8]);
        Assert.Equal(root, states[^1].Root);
    }

    /// <summary>4-level tables at gfns 0x100 (PML4), 0x101 (PDPT), 0x102 (PD), 0x103 (PT); PTE 0 maps data gfn 0x400.</summary>
    static ShadowOp[] Long4Setup(PagingControls c) =>
    [
        .. Slots,
        Store(0x10_0000, 0x10_1000 | A | U | W | P, 8),
        Store(0x10_1000, 0x10_2000 | A | U | W | P, 8),
        Store(0x10_2000, 0x10_3000 | A | U | W | P, 8),
        Store(0x10_3000, 0x40_0000 | D | A | U | W | P, 8),
        new ShadowOp.GuestSetPaging(c, 0x10_0000),
    ];

    static readonly PagingControls Long4 = new(PagingMode.Long4, cr0Wp: true, maxPhyAddr: 46);
    static readonly ShadowKey PtKey = new(0x103, ShadowRole.Base(Long4).WithLevel(1));
    static readonly ShadowKey PdKey = new(0x102, ShadowRole.Base(Long4).WithLevel(2));
    static readonly ShadowKey PdptKey = new(0x101, ShadowRole.Base(Long4).WithLevel(3));

    [Fact]
    public void A_store_to_a_leaf_table_unsyncs_it_and_INVLPG_resyncs_the_entry()
    {
        var setup = Long4Setup(Long4);
        var (states, results) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Write(0x123),                                  // fault in: PT gfn 0x103 shadowed by a sync level-1 page
            Store(0x10_3000, 0x40_1000 | D | A | U | W | P, 8),   // retarget PTE 0: the PT goes unsync, the store is not emulated
            Read(0x123),                                   // the stale translation is still served (no flush yet)
            new ShadowOp.Invlpg(0x0),                      // sync entry 0: the guest entry maps another frame, so it goes
            Read(0x123),                                   // faulted in again, now to gfn 0x401
        ]);
        int n = setup.Length;
        Assert.Equal(new ShadowResult.Translated(0x40_0123, (DataHostPfn << 12) | 0x123, Faulted: true), results[n]);
        var afterStore = states[n + 1];
        Assert.True(afterStore.Pages[PtKey].Unsync);
        Assert.Equal(0x400UL, Assert.IsType<ShadowEntry.Leaf>(afterStore.Pages[PtKey].Entries[0]).Gfn);
        Assert.Equal(new ShadowResult.Translated(0x40_0123, (DataHostPfn << 12) | 0x123, Faulted: false), results[n + 2]);
        var afterInvlpg = states[n + 3];
        Assert.True(afterInvlpg.Pages[PtKey].Unsync);                 // INVLPG syncs the entry, not the page
        Assert.False(afterInvlpg.Pages[PtKey].Entries.ContainsKey(0));
        Assert.Equal(new ShadowResult.Translated(0x40_1123, ((DataHostPfn + 1) << 12) | 0x123, Faulted: true), results[n + 4]);
        Assert.Equal(0x401UL, Assert.IsType<ShadowEntry.Leaf>(states[^1].Pages[PtKey].Entries[0]).Gfn);
    }

    [Fact]
    public void A_page_fault_invalidates_the_faulting_address_so_a_stale_entry_is_not_served_again()
    {
        var setup = Long4Setup(Long4);
        var user = Privilege.User;
        var (states, results) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Store(0x10_3000, 0x40_0000 | D | A | U | P, 8),           // PTE 0: user, read-only (the PT is not shadowed yet)
            new ShadowOp.GuestAccess(Access.Read(0x123, user)),     // fault in a read-only user leaf
            Store(0x10_3000, 0x40_1000 | D | A | W | P, 8),           // now supervisor-only, another frame: unsync, no trap
            new ShadowOp.GuestAccess(Access.Read(0x123, user)),     // a hit on the stale entry: allowed, no flush yet
            new ShadowOp.GuestAccess(Access.Write(0x123, user)),    // the hit fails (read-only), the walk faults on U/S
            new ShadowOp.GuestAccess(Access.Read(0x123, user)),     // SDM 4.10.4.1: the fault invalidated gva 0: #PF again
        ]);
        int n = setup.Length;
        Assert.Equal(new ShadowResult.Translated(0x40_0123, (DataHostPfn << 12) | 0x123, Faulted: true), results[n + 1]);
        Assert.Equal(new ShadowResult.Translated(0x40_0123, (DataHostPfn << 12) | 0x123, Faulted: false), results[n + 3]);
        var userFault = PageFaultErrorCode.Present | PageFaultErrorCode.User;
        Assert.Equal(new ShadowResult.GuestFault(new WalkResult.PageFault(userFault | PageFaultErrorCode.Write)), results[n + 4]);
        Assert.False(states[n + 4].Pages[PtKey].Entries.ContainsKey(0));   // the fault synced the entry away
        Assert.Equal(new ShadowResult.GuestFault(new WalkResult.PageFault(userFault)), results[n + 5]);
    }

    [Fact]
    public void A_clean_large_page_gets_its_own_direct_pages_so_that_the_first_write_through_it_sets_D()
    {
        ShadowOp[] setup =
        [
            .. Slots,
            Store(0x10_0000, 0x10_1000 | A | U | W | P, 8),
            Store(0x10_1000, 0x10_2000 | A | U | W | P, 8),
            Store(0x10_2000, 0x40_0000 | A | PS | U | W | P, 8),      // PDE 0: the 2 MiB page at gfn 0x400, clean
            Store(0x10_2008, 0x40_0000 | D | A | PS | U | W | P, 8),  // PDE 1: the same page, dirty
            new ShadowOp.GuestSetPaging(Long4, 0x10_0000),
        ];
        var (states, results) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Write(0x20_0000),           // through PDE 1: direct page (0x400, WUX)
            Read(0x1000),               // through PDE 0, clean: direct page (0x400, U-X), not the dirty one's
            Write(0x0),                 // no hit: the walk sets PDE 0's D, and PDE 0 is relinked to the WUX page
            Write(0x0),                 // now a hit
        ]);
        int n = setup.Length;
        var direct = ShadowRole.Base(Long4).WithLevel(1).WithDirect(true);
        var dirtyKey = new ShadowKey(0x400, direct.WithAccess(Acc.All));
        var cleanKey = new ShadowKey(0x400, direct.WithAccess(Acc.User | Acc.Exec));
        Assert.Equal(new ShadowEntry.Table(cleanKey), states[n + 1].Pages[PdKey].Entries[0]);
        Assert.Equal(new ShadowEntry.Table(dirtyKey), states[n + 1].Pages[PdKey].Entries[1]);
        Assert.Equal(new ShadowResult.Translated(0x40_0000, DataHostPfn << 12, Faulted: true), results[n + 2]);
        Assert.NotEqual(0UL, states[n + 2].ReadGuest(0x10_2000, 8) & D);
        Assert.Equal(new ShadowEntry.Table(dirtyKey), states[n + 2].Pages[PdKey].Entries[0]);
        Assert.Equal(new ShadowResult.Translated(0x40_0000, DataHostPfn << 12, Faulted: false), results[n + 3]);
    }

    /// <summary>
    /// Long reverse-map and parent lists (the impl's pte_list descriptor chains: more than six entries,
    /// removal from the middle of a chain, collapse back to one entry): ten page-directory entries link
    /// one page table whose twenty entries all map one data frame. RunBoth checks the impl's rmaps and
    /// parent lists against a scan of its entries after every step.
    /// </summary>
    [Fact]
    public void Many_leaves_of_one_gfn_and_many_parents_of_one_page_stay_consistent_through_removals()
    {
        var ops = new List<ShadowOp>
        {
            Slots[0], Slots[1],
            Store(0x10_0000, 0x10_1000 | A | U | W | P, 8),
            Store(0x10_1000, 0x10_2000 | A | U | W | P, 8),
        };
        for (int pde = 0; pde < 10; pde++) ops.Add(Store(0x10_2000 + 8UL * (ulong)pde, 0x10_3000 | A | U | W | P, 8));
        for (int pte = 0; pte < 20; pte++) ops.Add(Store(0x10_3000 + 8UL * (ulong)pte, 0x40_0000 | D | A | U | W | P, 8));
        ops.Add(new ShadowOp.GuestSetPaging(Long4, 0x10_0000));
        for (int pde = 0; pde < 10; pde++)
            for (int pte = 0; pte < 20; pte += pde == 0 ? 1 : 7)
                ops.Add(Read(((ulong)pde << 21) | ((ulong)pte << 12)));
        int filled = ops.Count;
        ops.Add(Store(0x10_2018, 0, 8));                                   // PDE 3 and 7 cleared: emulated, two links go
        ops.Add(Store(0x10_2038, 0, 8));
        ops.Add(Read(0x0));                                                // a walk through the directory resets its flooding count
        ops.Add(Store(0x10_3028, 0x40_1000 | D | A | U | W | P, 8));        // PTEs 5 and 11 retargeted: the table goes unsync
        ops.Add(Store(0x10_3058, 0x40_1000 | D | A | U | W | P, 8));
        ops.Add(new ShadowOp.FlushTlb());                                  // sync: entries 5 and 11 go (their gfn changed)
        int synced = ops.Count;
        ops.Add(new ShadowOp.SetDirtyLogging(1, true));                    // every leaf of the data slot write-protected via the rmap
        ops.Add(new ShadowOp.ZapRange(0x400, 0x401));                      // and then all removed via the rmap
        int zapped = ops.Count;
        ops.Add(Store(0x10_2040, 0, 8));                                   // three stores without a walk: the directory's page is zapped
        ops.Add(Store(0x10_2048, 0, 8));
        ops.Add(Store(0x10_2050, 0, 8));

        var (states, _) = RunBoth(new ShadowConfig(46), [.. ops]);
        int LeavesOf(ShadowState s, ulong gfn) => s.Leaves().Count(l => l.Leaf.Gfn == gfn);
        Assert.Equal(20, LeavesOf(states[filled - 1], 0x400));
        Assert.Equal(10, states[filled - 1].LinksTo(PtKey).Count());
        Assert.Equal(8, states[synced - 3].LinksTo(PtKey).Count());
        Assert.Equal(18, LeavesOf(states[synced - 1], 0x400));
        Assert.All(states[synced].Leaves(), l => Assert.False(l.Leaf.Writable));
        Assert.Equal(0, LeavesOf(states[zapped - 1], 0x400));
        Assert.False(states[^1].Pages.ContainsKey(PdKey));
        Assert.Empty(states[^1].LinksTo(PtKey));
    }

    [Fact]
    public void Three_stores_to_an_upper_level_table_without_a_walk_through_it_zap_its_shadow_page()
    {
        var setup = Long4Setup(Long4);
        var (states, _) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Read(0x0),
            Store(0x10_2800, 0, 8),     // PD entries the guest does not use: emulated, write flooding 1, 2, 3
            Store(0x10_2808, 0, 8),
            Store(0x10_2800, 0, 8),
        ]);
        int n = setup.Length;
        Assert.Equal(0, states[n].Pages[PdKey].WriteFlooding);
        Assert.Equal(1, states[n + 1].Pages[PdKey].WriteFlooding);
        Assert.Equal(2, states[n + 2].Pages[PdKey].WriteFlooding);
        var after = states[n + 3];
        Assert.False(after.Pages.ContainsKey(PdKey));
        Assert.False(after.Pages[PdptKey].Entries.ContainsKey(0));    // the link to it went too
        Assert.True(after.Pages.ContainsKey(PtKey));                   // its (sync) child stays
        Assert.NotNull(after.Root);
    }

    [Fact]
    public void A_misaligned_8_byte_store_to_a_32bit_table_zaps_its_shadow_pages()
    {
        var c = new PagingControls(PagingMode.Bits32, maxPhyAddr: 40);
        ShadowOp[] setup =
        [
            .. Slots,
            Store(0x10_0000, 0x10_1000 | A | U | W | P, 4),       // PDE 0 -> PT at gfn 0x101
            Store(0x10_1000, 0x40_0000 | D | A | U | W | P, 4),   // PTE 0 -> data gfn 0x400
            new ShadowOp.GuestSetPaging(c, 0x10_0000),
            Read(0x0),
        ];
        // The PT, write-protected and (no unsync) emulated: an 8-byte store over PTEs 0 and 1 zaps its page.
        var (noUnsync, _) = RunBoth(new ShadowConfig(40, allowUnsync: false), [.. setup, Store(0x10_1000, 0x40_0000 | D | A | U | W | P, 8)]);
        var pt = new ShadowKey(0x101, ShadowRole.Base(c).WithLevel(1));
        var root0 = new ShadowKey(RamGfn, ShadowRole.Base(c).WithLevel(2));
        Assert.True(noUnsync[^2].Pages.ContainsKey(pt));
        Assert.Equal(new ShadowEntry.Table(pt), noUnsync[^2].Pages[root0].Entries[0]);
        Assert.False(noUnsync[^1].Pages.ContainsKey(pt));
        Assert.False(noUnsync[^1].Pages[root0].Entries.ContainsKey(0));

        // The PD (always emulated: an upper-level table): an 8-byte store over PDEs 2 and 3 zaps all four root pages.
        var (pd, _) = RunBoth(new ShadowConfig(40), [.. setup, Store(0x10_0008, 0, 8)]);
        Assert.Null(pd[^1].Root);
        Assert.Equal(new[] { pt }, pd[^1].Pages.Keys);
    }

    /// <summary>
    /// One guest page used as a page table and then also as a page directory (KVM's
    /// kvm_mmu_find_shadow_page: before an upper-level page is found or made for a gfn, the unsync
    /// pages of that gfn are zapped, since an upper-level table is write-protected and cannot stay
    /// out of sync). The PT at gfn 0x103 is shadowed by two level-1 pages (PDE 0 reaches it with U set,
    /// PDE 1 without: two roles) and both go unsync; then PDPT entry 1 points at it, and a walk through
    /// entry 1 reads it as a PD whose entry 5 maps a 2 MiB page. Both unsync pages go, not only the first.
    /// </summary>
    [Fact]
    public void A_page_table_wanted_as_a_directory_has_its_unsync_shadow_page_zapped_first()
    {
        var setup = Long4Setup(Long4);
        const ulong ViaPdpt1 = (1UL << 30) | (5UL << 21) | 0x123;    // PML4 0, PDPT 1, PD 5
        var (states, results) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Store(0x10_2008, 0x10_3000 | A | W | P, 8),                  // PDE 1 -> the PT too, supervisor only
            Read(0x0), Read(0x20_0000),                                  // the PT (gfn 0x103) shadowed by two level-1 pages
            Store(0x10_3028, 0x40_0000 | PS | D | A | U | W | P, 8),     // PTE 5 (unused as a PTE): the PT goes unsync
            Store(0x10_1008, 0x10_3000 | A | U | W | P, 8),              // PDPTE 1 -> the same page, as a PD (emulated)
            Read(ViaPdpt1),                                              // needs (0x103, level 2): both unsync pages go
            Read(0x0),                                                   // the PT shadowed again, in sync
        ]);
        int n = setup.Length + 3;
        var asDirectory = new ShadowKey(0x103, ShadowRole.Base(Long4).WithLevel(2));
        static IEnumerable<ShadowPage> LeafTables(ShadowState s) => s.Pages.Values.Where(p => p.Key.Gfn == 0x103 && p.Key.Role.Level == 1);
        Assert.Equal(2, LeafTables(states[n + 1]).Count(p => p.Unsync));
        Assert.Equal(new ShadowResult.Translated(0x40_0123, (DataHostPfn << 12) | 0x123, Faulted: true), results[n + 2]);
        var zapped = states[n + 2];
        Assert.Empty(LeafTables(zapped));
        Assert.False(zapped.Pages[PdKey].Entries.ContainsKey(0));     // the links to them went with them
        Assert.False(zapped.Pages[PdKey].Entries.ContainsKey(1));
        Assert.True(zapped.Pages.ContainsKey(asDirectory));
        Assert.True(states[^1].Pages.ContainsKey(PtKey));              // a new level-1 page, beside the directory's
        Assert.True(states[^1].Pages.ContainsKey(asDirectory));
    }

    /// <summary>
    /// A fault that fills an entry still holding a leaf for another gfn (KVM's mmu_set_spte drops the
    /// old spte, and with it its reverse-map entry, when the pfn changes). PTE 0 maps gfn 0x400 clean, so
    /// its leaf is read-only (the first write must set D); the guest retargets PTE 0 to gfn 0x401 without
    /// a flush (the PT goes unsync, the stale leaf stays); a write then misses the read-only leaf, the
    /// walk gives gfn 0x401, and the fill replaces the leaf in place. RunBoth checks the impl's rmaps
    /// against its entries after every step: gfn 0x400's must be empty.
    /// </summary>
    [Fact]
    public void A_fault_that_refills_a_leaf_for_another_gfn_drops_the_old_leaf_from_its_reverse_map()
    {
        ShadowOp[] setup = [.. Long4Setup(Long4), Store(0x10_3000, 0x40_0000 | A | U | W | P, 8)];
        var (states, results) = RunBoth(new ShadowConfig(46),
        [
            .. setup,
            Read(0x123),                                                 // a read-only leaf for gfn 0x400
            Store(0x10_3000, 0x40_1000 | A | U | W | P, 8),              // PTE 0 -> gfn 0x401: unsync, the leaf is stale
            Write(0x123),                                                // the fill replaces the present leaf
        ]);
        int n = setup.Length;
        var stale = Assert.IsType<ShadowEntry.Leaf>(states[n + 1].Pages[PtKey].Entries[0]);
        Assert.Equal(0x400UL, stale.Gfn);
        Assert.False(stale.Writable);
        Assert.Equal(new ShadowResult.Translated(0x40_1123, ((DataHostPfn + 1) << 12) | 0x123, Faulted: true), results[n + 2]);
        var refilled = Assert.IsType<ShadowEntry.Leaf>(states[^1].Pages[PtKey].Entries[0]);
        Assert.Equal(0x401UL, refilled.Gfn);
        Assert.True(refilled.Writable);
        Assert.DoesNotContain(states[^1].Leaves(), l => l.Leaf.Gfn == 0x400);   // the spec's side; the impl's rmaps are checked by RunBoth
    }
}
