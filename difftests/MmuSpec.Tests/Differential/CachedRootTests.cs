using System.Diagnostics;
using MmuSpec.Harness.Running;
using MmuSpec.Harness.Shadow;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using Xunit;
using Xunit.Abstractions;
using static MmuSpec.Tests.Differential.ShadowDifferentialTests;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Cached roots and TLB invalidation (docs/shadow-model.md, "GuestMovCr3", "Invpcid", "Flush PCID
/// p"): random sequences with many address spaces, PCIDs, NOFLUSH switches and INVPCID under both
/// root policies, and hand-written scenarios run on both sides with concrete expectations.
/// </summary>
public sealed class CachedRootTests(ITestOutputHelper output, PropertyProgress progress) : IClassFixture<PropertyProgress>
{
    [Theory]
    [MemberData(nameof(RegisteredProperties.CachedRoots), MemberType = typeof(RegisteredProperties))]
    public void Spec_and_impl_agree_on_cached_roots_after_every_operation(string property)
    {
        var time = Stopwatch.StartNew();
        var p = DiffProperties.Find(property);   // its TestCases: the quick tier's count (MMUSPEC_MAX_TEST overrides)
        var runner = p.Check(output.WriteLine, PropertyCheck.MaxTest(p.TestCases), PropertyCheck.ReplayFromEnvironment());
        Assert.True(runner.TestsRun > 0, "the property ran no case");
        progress.Passed(property, runner.TestsRun, time.Elapsed);
    }

    static readonly string[] RequiredRules =
    [
        "MOV CR3: current root kept", "MOV CR3: cached root switched in", "MOV CR3: miss, root built",
        "MOV CR3: miss evicted the least recently used root", "MOV CR3: PAE root rebuilt (PDPTEs changed)",
        "MOV CR3: unsync root re-synced on reuse (NOFLUSH)", "MOV CR3: cached root reused with NOFLUSH, no sync",
        "root flagged unsync: by Invpcid", "root flagged unsync: by GuestMovCr3", "root flagged unsync: by FlushTlb",
        "previous root freed: by Invpcid", "previous root freed: by GuestMovCr3", "previous root freed: by GuestSetPaging",
        "previous root freed: by GuestStore", "access: stale hit (a translation the tables no longer give)",
        "INVPCID type 0", "INVPCID type 1", "INVPCID type 2", "INVPCID type 3",
        "GuestMovCr3 fault #GP", "Invpcid fault #GP", "resync page: by GuestMovCr3", "resync page: by Invpcid",
    ];

    [Fact]
    public void The_generator_reaches_every_cached_root_rule()
    {
        var counts = new SortedDictionary<string, int>();
        foreach (var policy in new[] { ShadowRootPolicy.KeepAndResync, ShadowRootPolicy.Upstream })
            foreach (var (rule, n) in ShadowCoverage.Measure(new ShadowGenOptions(null, Roots: true, RootPolicy: policy), cases: 60))
                counts[rule] = counts.GetValueOrDefault(rule) + n;
        foreach (var (rule, n) in counts) output.WriteLine($"{n,7}  {rule}");
        var missing = RequiredRules.Where(r => !counts.ContainsKey(r)).ToList();
        Assert.True(missing.Count == 0, $"the generator no longer reaches: {string.Join(", ", missing)}");
    }

    // ---- hand-written scenarios ----

    const ulong T = 1 | 2 | 4 | 0x20, D = 0x40;   // P, W, U, A; D
    const ulong RamGfn = 0x100, DataGfn = 0x400, DataHostPfn = 0x8000;
    const ulong NoFlush = ShadowOp.GuestMovCr3.NoFlush;

    // Five 4-level address spaces A..E (PML4 pages) sharing one PDPT -> PD -> PT; A also has a
    // private path at PML4 index 1. gva 0 -> gpa 0x400000, gva 0x1000 -> 0x401000, gva 0x80_0000_0000 -> 0x410000.
    const ulong PmlA = 0x10_0000, PmlB = 0x10_1000, Pdpt = 0x10_2000, Pd = 0x10_3000, Pt = 0x10_4000,
        PmlC = 0x10_5000, PmlD = 0x10_6000, PmlE = 0x10_7000, Pdpt2 = 0x10_8000, Pd2 = 0x10_9000, Pt2 = 0x10_A000;
    const ulong PrivateGva = 0x80_0000_0000;

    static readonly PagingControls Long4 = new(PagingMode.Long4, maxPhyAddr: 40);

    static ShadowOp Store(ulong gpa, ulong value) => new ShadowOp.GuestStore(gpa, value, 8);
    static ShadowOp Read(ulong gva) => new ShadowOp.GuestAccess(Access.Read(gva));
    static ShadowOp Mov(ulong cr3) => new ShadowOp.GuestMovCr3(cr3);

    static ShadowOp[] Boot(ulong cr3 = PmlA | 1, bool pcide = true) =>
    [
        new ShadowOp.CreateSlot(0, RamGfn, 16, 0x5000, ReadOnly: false),
        new ShadowOp.CreateSlot(1, DataGfn, 1024, DataHostPfn, ReadOnly: false),
        .. new[] { PmlA, PmlB, PmlC, PmlD, PmlE }.Select(pml => Store(pml, Pdpt | T)),
        Store(PmlA + 8, Pdpt2 | T),
        Store(Pdpt, Pd | T), Store(Pd, Pt | T), Store(Pt, 0x40_0000 | T | D), Store(Pt + 8, 0x40_1000 | T | D),
        Store(Pdpt2, Pd2 | T), Store(Pd2, Pt2 | T), Store(Pt2, 0x41_0000 | T | D),
        new ShadowOp.GuestSetPaging(Long4, cr3, pcide),
    ];

    static ShadowConfig Config(ShadowRootPolicy policy) => new(40, rootPolicy: policy);

    static ShadowResult.Translated Mapped(ulong gpa, bool faulted) => new(gpa, ((DataHostPfn + (gpa >> 12) - DataGfn) << 12) | (gpa & 0xFFF), faulted);

    [Fact]
    public void Switches_keep_the_roots_in_least_recently_used_order_and_a_miss_evicts_the_oldest()
    {
        var (states, _) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            .. Boot(),
            Mov(PmlB | 2 | NoFlush), Mov(PmlC | 3 | NoFlush), Mov(PmlD | 4 | NoFlush),
            Mov(PmlB | 2 | NoFlush),          // a hit on previous root 1
            Mov(PmlE | 5 | NoFlush),          // a miss with four roots cached: A, the oldest, goes
            Mov(PmlA | 1 | NoFlush),          // a miss again: A is rebuilt, C goes
        ]);
        static ulong[] Pgds(ShadowState s) => [.. s.Roots.All.Select(r => r.Pgd)];
        int boot = Boot().Length;
        Assert.Equal([PmlD | 4, PmlC | 3, PmlB | 2, PmlA | 1], Pgds(states[boot + 2]));
        Assert.Equal([PmlB | 2, PmlD | 4, PmlC | 3, PmlA | 1], Pgds(states[boot + 3]));
        Assert.Equal([PmlE | 5, PmlB | 2, PmlD | 4, PmlC | 3], Pgds(states[boot + 4]));
        Assert.Equal([PmlA | 1, PmlE | 5, PmlB | 2, PmlD | 4], Pgds(states[boot + 5]));
        // Freeing a root keeps its pages: A's root page was found again, not rebuilt.
        Assert.Contains(states[boot + 5].Pages.Keys, k => k.Gfn == PmlA >> 12 && k.Role.Level == 4);
    }

    /// <summary>
    /// A MOV CR3 while there is no current root: three emulated stores to an entry of B's PML4 that the
    /// guest does not use, with no walk through it in between, zap B's root page (write flooding), which
    /// frees the current root and keeps the previous one. The NOFLUSH switch back to A then takes A out
    /// of the previous roots (no copy left behind) and makes it current.
    /// </summary>
    [Fact]
    public void A_cached_root_taken_while_there_is_no_current_root_leaves_the_previous_roots()
    {
        var (states, _) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            .. Boot(),                                                    // A current
            Mov(PmlB | 2 | NoFlush),                                      // B current, A previous
            Store(PmlB + 0x800, 0), Store(PmlB + 0x800, 0), Store(PmlB + 0x800, 0),
            Mov(PmlA | 1 | NoFlush),
        ]);
        int boot = Boot().Length;
        Assert.Null(states[boot + 3].Roots.Current);
        Assert.Equal([PmlA | 1], states[boot + 3].Roots.Previous.Select(r => r.Pgd));
        Assert.Equal(PmlA | 1, states[boot + 4].Roots.Current!.Pgd);
        Assert.Empty(states[boot + 4].Roots.Previous);
    }

    /// <summary>
    /// The keep-unsync-prev-roots proposal (Lai Jiangshan, 2021): A's shared page table goes unsync while B runs;
    /// INVPCID flushes A's PCID; the NOFLUSH
    /// switch back to A must not serve A's stale entry. KeepAndResync keeps A (flagged) and re-syncs it
    /// on reuse; Upstream frees it and rebuilds. Without the INVPCID the stale entry is served, as the
    /// architecture allows (the MMU does no more than the flush requires).
    /// </summary>
    [Theory]
    [InlineData(ShadowRootPolicy.KeepAndResync, true)]
    [InlineData(ShadowRootPolicy.Upstream, true)]
    [InlineData(ShadowRootPolicy.KeepAndResync, false)]
    [InlineData(ShadowRootPolicy.Upstream, false)]
    public void A_root_flushed_while_cached_is_resynced_or_rebuilt_before_reuse(ShadowRootPolicy policy, bool invpcid)
    {
        ShadowOp[] ops =
        [
            .. Boot(),
            Read(0),                                              // fills A's path; the PT (gfn 0x104) is shadowed
            Mov(PmlB | 2 | NoFlush),
            Store(Pt, 0x40_2000 | T | D),                         // the PT goes unsync; A's entry for gva 0 is stale
            .. invpcid ? [new ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, 1, 0)] : Array.Empty<ShadowOp>(),
            Mov(PmlA | 1 | NoFlush),
            Read(0),
        ];
        var (states, results) = RunBoth(Config(policy), ops);
        int flushed = Boot().Length + 3;
        if (invpcid)
        {
            var afterInvpcid = states[flushed];
            var a = afterInvpcid.Roots.Previous.FirstOrDefault(r => r.Pgd == (PmlA | 1));
            if (policy == ShadowRootPolicy.KeepAndResync) Assert.True(a is { Unsync: true }, $"A kept and flagged: {afterInvpcid.Roots}");
            else Assert.Null(a);
        }
        var current = states[^2].Roots.Current!;
        Assert.Equal(PmlA | 1, current.Pgd);
        Assert.False(current.Unsync);
        Assert.Equal([PmlB | 2], states[^2].Roots.Previous.Select(r => r.Pgd));
        Assert.Equal(invpcid ? Mapped(0x40_2000, faulted: true) : Mapped(0x40_0000, faulted: false), results[^1]);
    }

    /// <summary>
    /// What neither oracle flags (docs/shadow-model.md, "What the layer does not demand"): B (PCID 2) and
    /// A (PCID 1) share a page table. While B runs, PT[0] is not present; B only maps PT[1], so its shadow
    /// path links the shared level-1 page. Then A runs, the guest maps PT[0], A touches it, and the guest
    /// changes PT[0] again without a flush (the page goes unsync, A's entry is stale). A NOFLUSH switch
    /// back to B serves A's stale entry through the shared page: a translation PCID 2 never could have
    /// cached, since PT[0] never held it while PCID 2 was current (SDM §4.10.1 tags a TLB entry with the
    /// PCID current when it is created). KVM does the same (fast_pgd_switch reuses B without a sync); the
    /// model follows KVM and oracle 2 accepts it, reading a PCID's TLB as anything the tables gave since
    /// that PCID's last flush.
    /// </summary>
    [Fact]
    public void A_NOFLUSH_switch_can_serve_a_translation_the_PCID_never_cached_as_KVM_does()
    {
        ShadowOp[] boot = [.. Boot(cr3: PmlB | 2)];
        var (_, results) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            .. boot.Take(boot.Length - 1),
            Store(Pt, 0),                                         // PT[0] not present while B runs
            boot[^1],
            Read(0x1000),                                         // B's shadow path reaches the shared PT
            Mov(PmlA | 1 | NoFlush),
            Store(Pt, 0x40_0000 | T | D),                         // PT[0] mapped (the PT goes unsync)
            Read(0),                                              // A fills it: the PT is synced, entry 0 = 0x400000
            Store(Pt, 0x40_2000 | T | D),                         // changed without a flush: unsync, A's entry stale
            Mov(PmlB | 2 | NoFlush),
            Read(0),
        ]);
        Assert.Equal(Mapped(0x40_0000, faulted: false), results[^1]);
    }

    [Fact]
    public void INVPCID_of_one_address_in_another_PCID_resyncs_only_that_entry_of_its_cached_root()
    {
        var (_, results) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            .. Boot(),
            Read(0), Read(0x1000),
            Mov(PmlB | 2 | NoFlush),
            Store(Pt, 0x40_2000 | T | D), Store(Pt + 8, 0x40_3000 | T | D),
            new ShadowOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, 1, 0),
            Mov(PmlA | 1 | NoFlush),
            Read(0x1000), Read(0),
        ]);
        Assert.Equal(Mapped(0x40_1000, faulted: false), results[^2]);   // not invalidated: the stale entry may stay
        Assert.Equal(Mapped(0x40_2000, faulted: true), results[^1]);    // invalidated in PCID 1: refilled
    }

    [Fact]
    public void A_full_flush_frees_a_previous_root_that_reaches_an_unsync_page_upstream_and_flags_it_under_keep_and_resync()
    {
        ShadowOp[] ops =
        [
            .. Boot(),
            Read(PrivateGva),                                     // A's private PT (gfn 0x10A), reachable from A only
            Mov(PmlC | 3 | NoFlush),
            Mov(PmlB | 2 | NoFlush),                              // previous roots: C (reaches nothing unsync), A
            Store(Pt2, 0x41_1000 | T | D),                        // A's private PT goes unsync
            new ShadowOp.FlushTlb(),
        ];
        var keep = RunBoth(Config(ShadowRootPolicy.KeepAndResync), ops).States[^1];
        var upstream = RunBoth(Config(ShadowRootPolicy.Upstream), ops).States[^1];
        static ShadowPage PrivatePt(ShadowState s) => Assert.Single(s.Pages.Values, p => p.Key.Gfn == Pt2 >> 12);
        // KeepAndResync: A kept and flagged (the sync is deferred to the switch that reuses it), C untouched.
        Assert.Equal([(PmlC | 3, false), (PmlA | 1, true)], keep.Roots.Previous.Select(r => (r.Pgd, r.Unsync)));
        Assert.True(PrivatePt(keep).Unsync);
        // Upstream (kvm_mmu_sync_prev_roots): A freed, C kept; the page stays unsync until a rebuild syncs it.
        Assert.Equal([(PmlC | 3, false)], upstream.Roots.Previous.Select(r => (r.Pgd, r.Unsync)));
        Assert.True(PrivatePt(upstream).Unsync);
    }

    [Fact]
    public void A_PAE_root_is_rebuilt_when_its_PDPTEs_changed_and_reused_when_they_did_not()
    {
        var pae = new PagingControls(PagingMode.Pae, maxPhyAddr: 40);
        // Two PDPTs in one page: 0x100000 (PDPTE 0 -> PD 0x101000) and 0x100020 (PDPTE 0 -> PD 0x102000).
        var (states, _) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            new ShadowOp.CreateSlot(0, RamGfn, 16, 0x5000, ReadOnly: false),
            Store(0x10_0000, 0x10_1000 | 1), Store(0x10_0020, 0x10_2000 | 1),
            new ShadowOp.GuestSetPaging(pae, 0x10_0000),
            Mov(0x10_0020), Mov(0x10_0000),                       // a plain hit
            Mov(0x10_0020),
            Store(0x10_0000, 0x10_3000 | 1),                      // the guest changes the first PDPT
            Mov(0x10_0000),                                       // same pgd, other PDPTEs: rebuilt
            Store(0x10_0000, 0x10_4000 | 1),                      // and again, while that root is current
            Mov(0x10_0000),                                       // the current root's PDPTEs no longer match: rebuilt
            Store(0x10_4800, 0),                                  // an unused PDE of its PD: emulated, write flooding 1
            Mov(0x10_0000),                                       // they match: kept (a rebuild would reset the count)
        ]);
        static ShadowKey? First(ShadowState s) => s.Roots.Current!.Root.Pages[0];
        Assert.Equal(0x101UL, First(states[5])!.Gfn);
        Assert.Equal(0x103UL, First(states[8])!.Gfn);
        Assert.Equal([0x10_0000UL, 0x10_0020UL], states[8].Roots.All.Select(r => r.Pgd));
        Assert.Equal(0x104UL, First(states[10])!.Gfn);
        Assert.Equal(0x104UL, First(states[^1])!.Gfn);
        Assert.Equal(1, states[^1].Pages[First(states[^1])!].WriteFlooding);
        Assert.Equal([0x10_0000UL, 0x10_0020UL], states[^1].Roots.All.Select(r => r.Pgd));
    }

    [Fact]
    public void Invalid_MOV_CR3_and_INVPCID_operands_raise_GP_and_change_nothing()
    {
        var (states, results) = RunBoth(Config(ShadowRootPolicy.KeepAndResync),
        [
            .. Boot(pcide: false),
            Mov(PmlB | NoFlush),                                       // bit 63 is reserved without PCIDE
            new ShadowOp.Invpcid(ShadowOp.Invpcid.SingleContext, 1, 0),  // a PCID other than 0 without PCIDE
            new ShadowOp.Invpcid(4, 0, 0),                             // no type 4
            new ShadowOp.Invpcid(ShadowOp.Invpcid.AllContexts, 0x1000, 0), // descriptor bits 63:12
            new ShadowOp.Invpcid(ShadowOp.Invpcid.IndividualAddress, 0, 1UL << 50),   // not canonical
            new ShadowOp.Invpcid(ShadowOp.Invpcid.AllContexts, 0xFFF, 0),    // types 2 and 3 take any PCID of 12 bits
        ]);
        int boot = Boot().Length;
        for (int i = boot; i < boot + 5; i++)
        {
            Assert.IsType<ShadowResult.GuestFault>(results[i]);
            Assert.Equal(states[boot - 1], states[i]);
        }
        Assert.Equal(VmResult.Ok.Instance, results[^1]);
    }
}
