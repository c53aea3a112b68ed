using MmuSpec.Harness.Shadow;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using Xunit;
using static MmuSpec.Tests.Differential.ShadowDifferentialTests;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Known answers for the prefetch rule (docs/shadow-model.md, "Prefetch"; KVM's FNAME(pte_prefetch) and
/// __direct_pte_prefetch): which neighbours of a fill's leaf get mapped, with which rights, and where the
/// prefetch ends. Every scenario runs on the spec and the impl, compared after every step (RunBoth).
/// </summary>
public sealed class ShadowPrefetchTests
{
    const ulong P = 1, W = 2, U = 4, A = 1 << 5, D = 1 << 6, PS = 1 << 7;
    const ulong RamHostPfn = 0x5000, DataHostPfn = 0x8000, ReadOnlyHostPfn = 0x9000, SmallHostPfn = 0xA000;
    const ulong Pt = 0x10_3000;

    static readonly PagingControls Long4 = new(PagingMode.Long4, cr0Wp: true, maxPhyAddr: 46);
    static readonly ShadowConfig On = new(46, prefetch: true), Off = new(46);
    static readonly ShadowKey PtKey = new(0x103, ShadowRole.Base(Long4).WithLevel(1));

    static ShadowOp Store(ulong gpa, ulong value) => new ShadowOp.GuestStore(gpa, value, 8);
    static ShadowOp Read(ulong gva) => new ShadowOp.GuestAccess(Access.Read(gva));
    static ShadowOp Write(ulong gva) => new ShadowOp.GuestAccess(Access.Write(gva));

    /// <summary>
    /// RAM at gfn 0x100 (PML4 0x100, PDPT 0x101, PD 0x102, PT 0x103), data at 0x400 (1024 pages), a read-only
    /// slot at 0x800 and a 5-page slot at 0xA00; PTE i of the PT is <paramref name="ptes"/>[i]; PDE 1 is
    /// <paramref name="pde1"/> (a 2 MiB page at gva 0x200000, or 0).
    /// </summary>
    static ShadowOp[] Guest(ulong[] ptes, ulong pde1 = 0) =>
    [
        new ShadowOp.CreateSlot(0, 0x100, 16, RamHostPfn, ReadOnly: false),
        new ShadowOp.CreateSlot(1, 0x400, 1024, DataHostPfn, ReadOnly: false),
        new ShadowOp.CreateSlot(2, 0x800, 16, ReadOnlyHostPfn, ReadOnly: true),
        new ShadowOp.CreateSlot(3, 0xA00, 5, SmallHostPfn, ReadOnly: false),
        Store(0x10_0000, 0x10_1000 | A | U | W | P),
        Store(0x10_1000, 0x10_2000 | A | U | W | P),
        Store(0x10_2000, 0x10_3000 | A | U | W | P),
        .. pde1 == 0 ? [] : new[] { Store(0x10_2008, pde1) },
        .. ptes.Select((v, i) => Store(Pt + (ulong)(8 * i), v)),
        new ShadowOp.GuestSetPaging(Long4, 0x10_0000),
    ];

    static ShadowEntry.Leaf LeafAt(ShadowState s, ShadowKey page, int index) =>
        Assert.IsType<ShadowEntry.Leaf>(s.Pages[page].Entries[index]);

    static int[] Mapped(ShadowState s, ShadowKey page) => [.. s.Pages[page].Entries.Keys];

    [Fact]
    public void A_fill_maps_the_qualifying_neighbours_of_its_group_with_their_own_rights_and_stops_at_the_first_that_does_not()
    {
        ulong[] ptes =
        [
            0x40_0000 | D | A | U | W | P,     // 0: the fault
            0x40_1000 | D | A | U | W | P,     // 1: dirty and writable: a writable entry
            0x40_2000 | A | U | W | P,         // 2: clean: read-only (protect_clean_gpte)
            0x40_3000 | D | A | U | P,         // 3: the guest's own read-only page
            0x10_3000 | D | A | W | P,         // 4: the PT itself, supervisor: write-protected (a sync page shadows it)
            0,                                 // 5: not present: the prefetch ends here
            0x40_6000 | D | A | U | W | P,     // 6: never looked at
        ];
        var (states, results) = RunBoth(On, [.. Guest(ptes), Read(0x0), Read(0x1000), Write(0x1000), Read(0x6000)]);
        var filled = states[^4];
        Assert.Equal([0, 1, 2, 3, 4], Mapped(filled, PtKey));
        Assert.Equal(new ShadowEntry.Leaf(0x401, DataHostPfn + 1, new TranslationRights(User: true, Writable: true, NoExecute: false, ProtectionKey: 0), true), LeafAt(filled, PtKey, 1));
        Assert.False(LeafAt(filled, PtKey, 2).Writable);
        Assert.Equal(new ShadowEntry.Leaf(0x403, DataHostPfn + 3, new TranslationRights(User: true, Writable: false, NoExecute: false, ProtectionKey: 0), false), LeafAt(filled, PtKey, 3));
        Assert.Equal(new ShadowEntry.Leaf(0x103, RamHostPfn + 3, new TranslationRights(User: false, Writable: true, NoExecute: false, ProtectionKey: 0), false), LeafAt(filled, PtKey, 4));
        // The prefetched entries serve hits: a read and a write of page 1 need no fault; page 6 still faults.
        Assert.Equal(new ShadowResult.Translated(0x40_1000, (DataHostPfn + 1) << 12, Faulted: false), results[^3]);
        Assert.Equal(new ShadowResult.Translated(0x40_1000, (DataHostPfn + 1) << 12, Faulted: false), results[^2]);
        Assert.Equal(new ShadowResult.Translated(0x40_6000, (DataHostPfn + 6) << 12, Faulted: true), results[^1]);
        // Guest memory is not written: a prefetch sets no A/D bit (page 2 stays clean).
        Assert.Equal(ptes[2], filled.ReadGuest(Pt + 16, 8));
    }

    [Fact]
    public void The_generator_draws_prefetch_for_about_half_the_cases_and_the_shrinker_can_turn_it_off()
    {
        var cases = Enumerable.Range(0, 60).Select(seed => ShadowGen.Build(seed, 30, new ShadowGenOptions(null))).ToList();
        int on = cases.Count(c => c.Config.Prefetch);
        Assert.InRange(on, 15, 45);
        var withPrefetch = cases.First(c => c.Config.Prefetch);
        Assert.Contains(ShadowShrink.Candidates(withPrefetch), c => !c.Config.Prefetch && c.Ops.SequenceEqual(withPrefetch.Ops) && c.Setup.SequenceEqual(withPrefetch.Setup));
        Assert.All(ShadowShrink.Candidates(cases.First(c => !c.Config.Prefetch)), c => Assert.False(c.Config.Prefetch));
    }

    [Fact]
    public void Without_the_switch_a_fill_maps_only_its_own_entry()
    {
        var (states, _) = RunBoth(Off, [.. Guest([0x40_0000 | D | A | U | W | P, 0x40_1000 | D | A | U | W | P]), Read(0x0)]);
        Assert.Equal([0], Mapped(states[^1], PtKey));
    }

    /// <summary>One guest entry that ends the prefetch per rule of FNAME(prefetch_invalid_gpte) and kvm_mmu_prefetch_sptes.</summary>
    public static TheoryData<string, ulong, PrefetchVerdict> Endings => new()
    {
        { "not present", 0x40_1000 | D | A | U | W, PrefetchVerdict.NotPresent },
        { "not accessed", 0x40_1000 | D | U | W | P, PrefetchVerdict.NotAccessed },
        { "reserved bit 51 (MAXPHYADDR 46)", (1UL << 51) | 0x40_1000 | D | A | U | W | P, PrefetchVerdict.ReservedBit },
        { "a frame in no slot", 0x200_0000 | D | A | U | W | P, PrefetchVerdict.NoSlot },
        { "a frame in a read-only slot, even read-only", 0x80_0000 | A | U | P, PrefetchVerdict.ReadOnlySlot },
    };

    [Theory]
    [MemberData(nameof(Endings))]
    public void A_neighbour_that_does_not_qualify_ends_the_prefetch(string why, ulong neighbour, PrefetchVerdict verdict)
    {
        // The fault at entry 3; entries 0..2 qualify, entry 4 is the one under test, entry 5 would qualify.
        ulong good = D | A | U | W | P;
        var (states, _) = RunBoth(On, [.. Guest([0x40_0000 | good, 0x40_1000 | good, 0x40_2000 | good, 0x40_3000 | good, neighbour, 0x40_5000 | good]), Read(0x3000)]);
        var after = states[^1];
        Assert.True(Mapped(after, PtKey).SequenceEqual([0, 1, 2, 3]), why);
        Assert.Equal(verdict, after.PrefetchGuestEntry(PtKey, 4).Verdict);
    }

    [Fact]
    public void In_a_logging_slot_a_clean_neighbour_is_mapped_read_only_and_a_dirty_writable_one_ends_the_prefetch()
    {
        ulong good = D | A | U | W | P;
        var (states, _) = RunBoth(On,
            [.. Guest([0x40_0000 | good, 0x40_1000 | A | U | W | P, 0x40_2000 | good, 0x40_3000 | good]), new ShadowOp.SetDirtyLogging(1, true), Read(0x0)]);
        var after = states[^1];
        Assert.Equal([0, 1], Mapped(after, PtKey));
        Assert.False(LeafAt(after, PtKey, 1).Writable);
        Assert.Equal(PrefetchVerdict.WritableIntoLoggingSlot, after.PrefetchGuestEntry(PtKey, 2).Verdict);
        Assert.Empty(after.DirtyBitmaps[1]);   // only a fault's write may log a page
    }

    [Fact]
    public void A_present_neighbour_is_never_overwritten_even_when_it_is_stale()
    {
        ulong good = D | A | U | W | P;
        var (states, _) = RunBoth(On,
        [
            .. Guest([0x40_0000 | good, 0x40_1000 | good]),
            Read(0x0),                                   // maps entries 0 and 1
            Store(Pt + 8, 0x40_5000 | good),             // the PT goes unsync: entry 1 is now stale (no flush yet)
            new ShadowOp.ZapRange(0x400, 0x401),         // entry 0 goes
            Read(0x0),                                   // refilled; the prefetch leaves the stale entry 1 alone
        ]);
        Assert.True(states[^1].Pages[PtKey].Unsync);
        Assert.Equal(0x401UL, LeafAt(states[^1], PtKey, 1).Gfn);
    }

    [Fact]
    public void A_direct_page_maps_each_run_of_free_entries_from_the_large_page_with_its_rights()
    {
        // PDE 1: a dirty 2 MiB page at gfn 0x400; the fault at gva 0x203000 (direct level-1 page, entry 3).
        var (states, _) = RunBoth(On, [.. Guest([], pde1: 0x40_0000 | PS | D | A | U | W | P), Read(0x20_3000)]);
        var after = states[^1];
        var direct = Assert.Single(after.Pages.Keys, k => k.Role is { Direct: true, Level: 1 });
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], Mapped(after, direct));
        for (int i = 0; i < 8; i++)
        {
            var leaf = LeafAt(after, direct, i);
            Assert.Equal((0x400UL + (ulong)i, DataHostPfn + (ulong)i, true), (leaf.Gfn, leaf.HostPfn, leaf.Writable));
            Assert.Equal(LeafAt(after, direct, 3).Rights, leaf.Rights);
        }
    }

    [Fact]
    public void A_clean_large_page_is_prefetched_read_only_and_a_run_past_its_slot_is_not_prefetched()
    {
        var (clean, _) = RunBoth(On, [.. Guest([], pde1: 0x40_0000 | PS | A | U | W | P), Read(0x20_3000)]);
        var direct = Assert.Single(clean[^1].Pages.Keys, k => k.Role is { Direct: true, Level: 1 });
        Assert.All(Enumerable.Range(0, 8), i => Assert.False(LeafAt(clean[^1], direct, i).Writable));

        // A 2 MiB page at gfn 0xA00, whose slot holds 5 frames: the run 1..7 does not lie in it.
        var (small, _) = RunBoth(On, [.. Guest([], pde1: 0xA0_0000 | PS | D | A | U | W | P), Read(0x20_0000)]);
        var page = Assert.Single(small[^1].Pages.Keys, k => k.Role is { Direct: true, Level: 1 });
        Assert.Equal([0], Mapped(small[^1], page));
        Assert.Equal(PrefetchVerdict.RunLeavesSlot, small[^1].PrefetchDirectRun(page, 1, 8));
    }
}
