using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// A schedule-point double: at the Nth schedule point of one kind on this thread it runs a callback once
/// (disarmed first, so the callback's own points pass). The callback is the competing vCPU: it runs
/// between the faulting vCPU's read of an entry and its compare-and-exchange, deterministically.
/// </summary>
public readonly struct ScriptedSchedule : ISchedulePoint
{
    [ThreadStatic] static SchedulePointKind s_kind;
    [ThreadStatic] static int s_left;
    [ThreadStatic] static Action? s_action;

    public static void Yield(SchedulePointKind what)
    {
        if (s_action is null || what != s_kind || --s_left != 0)
            return;
        Action action = s_action;
        s_action = null;
        action();
    }

    /// <summary>Runs <paramref name="action"/> at the <paramref name="nth"/> point of <paramref name="kind"/> from now.</summary>
    public static void At(SchedulePointKind kind, int nth, Action action)
    {
        s_kind = kind;
        s_left = nth;
        s_action = action;
    }

    /// <summary>Whether the armed callback ran.</summary>
    public static bool Fired => s_action is null;

    public static void Disarm() => s_action = null;
}

/// <summary>
/// Each racy step of the concurrent TDP fault (impl/TdpConcurrent), with the losing side forced: another
/// vCPU runs at the loser's schedule point, between its read and its compare-and-exchange. The loser
/// answers Retry, its cache gets back the pages it took, nothing leaks (linked tables counted against
/// the tree; every pool page back after Dispose), and its next attempt succeeds.
/// </summary>
public sealed class ConcurrentTdpRaceTests : ScriptedTdpFixture
{
    public ConcurrentTdpRaceTests() => CreateVm(maxPageSize: 12);

    TdpVcpuOutcome Access(ConcurrentTdpVcpu<EptFormat, ScriptedSchedule> vcpu, ulong gfn, AccessType type) => vcpu.Access(gfn << 12, type);

    /// <summary>Linked tables as the tree has them: must equal the MMU's count (a page neither linked, cached nor deferred would be a leak).</summary>
    long TreeTables()
    {
        long n = 0;
        _mmu.VisitPages((_, _) => n++);
        Assert.Equal(n, _mmu.TablePages);
        return n;
    }

    [Fact]
    public void Root_install_lost_to_another_vcpu_retries_and_returns_the_root_page()
    {
        TdpVcpuOutcome b = default;
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 5, AccessType.Write));
        var a = Access(_a, 5, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(Mapped(5, 12, faulted: true), b.Access);
        Assert.Equal(4, _a.CachedPages); // the root page it took is back, zeroed
        Assert.Equal(4, TreeTables()); // B's root and three tables; A's root went nowhere
        Assert.Equal(Mapped(5, 12, faulted: false), Access(_a, 5, AccessType.Write).Access);
    }

    [Fact]
    public void A_fault_that_installed_the_root_then_lost_its_link_keeps_the_root()
    {
        TdpVcpuOutcome b = default;
        // A's first exchange installs the root, its second would link the tables under it; B links first.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 2, () => b = Access(_b, 6, AccessType.Write));
        var a = Access(_a, 5, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(Mapped(6, 12, true), b.Access);
        Assert.Equal(4 - 1, _a.CachedPages); // the root stays linked: only the tables come back
        Assert.Equal(4, TreeTables());
        Assert.Equal(Mapped(6, 12, false), Access(_b, 6, AccessType.Write).Access); // B's mapping survived A's retry
        Assert.Equal(Mapped(5, 12, true), Access(_a, 5, AccessType.Write).Access);
        Assert.Equal(4, TreeTables());
    }

    [Fact]
    public void Table_link_lost_retries_and_returns_the_new_tables()
    {
        Assert.Equal(Mapped(0, 12, true), Access(_a, 0, AccessType.Write).Access);
        Assert.Equal(4, TreeTables());
        TdpVcpuOutcome b = default;
        // A's walk stops at the hole at level 2 for gfn 0x200; B links the level-1 table there first.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 0x201, AccessType.Write));
        var a = Access(_a, 0x200, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(Mapped(0x201, 12, true), b.Access);
        Assert.Equal(4, _a.CachedPages);
        Assert.Equal(5, TreeTables());
        Assert.Equal(Mapped(0x200, 12, true), Access(_a, 0x200, AccessType.Write).Access); // a hole in B's table
        Assert.Equal(5, TreeTables());
    }

    [Fact]
    public void Write_protection_fix_lost_falls_back_to_the_slow_path_and_the_page_is_logged_once()
    {
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(Mapped(7, 12, true), Access(_a, 7, AccessType.Read).Access); // read-only while logging
        TdpVcpuOutcome b = default;
        // A's fast fault read the read-only leaf; B's fast fault fixes it first. A's exchange fails, the
        // fast path gives up, and the slow path finds B's writable leaf: a hit.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 7, AccessType.Write));
        var a = Access(_a, 7, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(Mapped(7, 12, false), a.Access);
        Assert.Equal(Mapped(7, 12, true), b.Access);
        Assert.Equal((1, 1), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.Equal(Mapped(7, 12, false), Access(_a, 7, AccessType.Write).Access);
        var gfns = new List<ulong>();
        Assert.Equal(SlotStatus.Ok, _mmu.GetDirtyLog(0, gfns));
        Assert.Equal([7UL], gfns);
        Assert.Equal(4, TreeTables());
    }

    [Fact]
    public void Huge_leaf_zap_lost_retries_then_maps_4k_in_the_winners_table()
    {
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        Assert.Equal(Mapped(0x200, 21, true), Access(_a, 0x200, AccessType.Read).Access);
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true)); // write-protects the 2 MiB leaf
        _mmu.TakeFlushes();
        TdpVcpuOutcome b = default;
        // A's first exchange would freeze the huge leaf; B zaps it and maps 4 KiB first.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 0x201, AccessType.Write));
        var a = Access(_a, 0x200, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(Mapped(0x201, 12, true), b.Access);
        Assert.Equal("[0x200, 0x400)", _mmu.TakeFlushes().ToString()); // B's zap, once; A flushed nothing
        Assert.Equal(4, _a.CachedPages);
        Assert.Equal(4, TreeTables());
        Assert.Equal(Mapped(0x200, 12, true), Access(_a, 0x200, AccessType.Write).Access);
        Assert.Equal(4, TreeTables());
    }

    [Fact]
    public void A_fault_that_reads_a_frozen_entry_retries()
    {
        Assert.Equal(Mapped(0x200, 12, true), Access(_a, 0x200, AccessType.Write).Access);
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        _mmu.TakeFlushes();
        TdpVcpuOutcome a = default;
        // B replaces the level-1 table by a 2 MiB leaf: its first exchange freezes the level-2 entry, its
        // second is the first of the removed table's entries; A runs there and finds the entry frozen.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 2, () => a = Access(_a, 0x205, AccessType.Read));
        var b = Access(_b, 0x201, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(4, _a.CachedPages);
        Assert.Equal(Mapped(0x201, 21, true), b.Access);
        Assert.Equal("[0x200, 0x400)", _mmu.TakeFlushes().ToString());
        Assert.Equal(Mapped(0x205, 21, false), Access(_a, 0x205, AccessType.Read).Access);
        Assert.Equal(1, _mmu.DeferredTablesRetired);
        Assert.Equal(1, _mmu.DeferredTablesFreed);
        Assert.Equal(3, TreeTables());
    }

    [Fact]
    public void A_removed_table_is_freed_only_after_the_vcpu_walking_it_leaves()
    {
        Assert.Equal(Mapped(0x200, 12, true), Access(_a, 0x200, AccessType.Write).Access);
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        int pendingDuring = -1;
        long freedDuring = -1, tablesDuring = -1;
        TdpVcpuOutcome b = default;
        _a.ForgetTlb(); // A's read walks rather than hit its own TLB entry for 0x200
        // A's fifth read is the level-1 entry (root field, levels 4, 3, 2, then 1): A already holds the
        // level-1 table's address when B unlinks it.
        ScriptedSchedule.At(SchedulePointKind.SpteRead, 5, () =>
        {
            b = Access(_b, 0x201, AccessType.Write);
            pendingDuring = _mmu.DeferredTablesPending;
            freedDuring = _mmu.DeferredTablesFreed;
            tablesDuring = _mmu.TablePages;
        });
        var a = Access(_a, 0x200, AccessType.Read);
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(Mapped(0x201, 21, true), b.Access);
        Assert.Equal(1, pendingDuring); // B could not free it: A was inside an older epoch
        Assert.Equal(0, freedDuring);
        Assert.Equal(3, tablesDuring); // unlinked, not yet free
        Assert.True(a.IsRetry); // A read the removed table's entry: frozen
        Assert.Equal(0, _mmu.DeferredTablesPending); // A's exit drained the epoch and freed it
        Assert.Equal(1, _mmu.DeferredTablesFreed);
        Assert.Equal(3, TreeTables());
        Assert.Equal(Mapped(0x200, 21, false), Access(_a, 0x200, AccessType.Read).Access);
    }

    /// <summary>gfn 0x200 mapped at 4 KiB read-only but MMU-writable (dirty logging on, then off), policy 2 MiB.</summary>
    void ReadOnlyLeafUnderHugePolicy()
    {
        Assert.Equal(Mapped(0x200, 12, true), Access(_a, 0x200, AccessType.Write).Access);
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, true));
        Assert.Equal(SlotStatus.Ok, _mmu.SetDirtyLogging(0, false));
        Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(21));
        _mmu.TakeFlushes();
    }

    [Fact]
    public void A_fast_fault_that_reads_a_frozen_entry_leaves_it_to_the_slow_path_which_retries()
    {
        ReadOnlyLeafUnderHugePolicy();
        TdpVcpuOutcome a = default;
        // B's fault (its fast path gave up at the hole) freezes the level-2 entry, then the removed table's
        // first entry; A's fast fault runs there and reads the frozen level-2 entry: not present.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 2, () => a = Access(_a, 0x200, AccessType.Write));
        var b = Access(_b, 0x201, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.True(a.IsRetry);
        Assert.Equal(Mapped(0x201, 21, true), b.Access);
        Assert.Equal((0L, 0L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.Equal(Mapped(0x200, 21, false), Access(_a, 0x200, AccessType.Write).Access);
    }

    [Fact]
    public void A_fast_fault_whose_table_is_removed_before_its_exchange_changes_nothing()
    {
        ReadOnlyLeafUnderHugePolicy();
        TdpVcpuOutcome b = default;
        // A's fast fault read the read-only leaf in the level-1 table; before its exchange B replaces that
        // table by a 2 MiB leaf, freezing every entry of it. A's exchange fails (refused), the table waits
        // for A's epoch, and A's slow path hits B's leaf.
        ScriptedSchedule.At(SchedulePointKind.SpteExchange, 1, () => b = Access(_b, 0x201, AccessType.Write));
        var a = Access(_a, 0x200, AccessType.Write);
        Assert.True(ScriptedSchedule.Fired);
        Assert.Equal(Mapped(0x201, 21, true), b.Access);
        Assert.Equal(Mapped(0x200, 21, false), a.Access);
        Assert.Equal((0L, 1L), (_mmu.FastFaultsTaken, _mmu.FastFaultsRefused));
        Assert.Equal(1, _mmu.DeferredTablesRetired);
        Assert.Equal(1, _mmu.DeferredTablesFreed);
        Assert.Equal(3, TreeTables());
    }
}
