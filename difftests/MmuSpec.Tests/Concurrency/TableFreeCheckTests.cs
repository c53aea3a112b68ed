using System.Diagnostics;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using MmuSpec.Tests.Impl;
using Xunit;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The DEBUG check that no table page is freed while a vCPU's walk holds it (ConcurrentTdpMmu.FreeCheck.cs), and
/// how a failed Debug.Assert reaches the harness: as the failing op's exception in the explored history, not as the
/// process failing fast. The early free the check exists for is the catalog's
/// concurrency/09-free-before-walkers-leave (upstream 7cca2d0b7e7d), which `mmuspec mutants` runs.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public sealed class TableFreeCheckTests
{
    const ulong HostBase = 0x100000;

#if DEBUG
    /// <summary>
    /// vCPU a stops just before reading an entry of the 4 KiB leaf table X (gfns 0..0x1ff); vCPU b replaces X by a
    /// 2 MiB leaf and retires it. The epochs keep X (a entered before the unlink), and freeing X then would fail the
    /// check, which names a's walk; a table a does not hold passes it. Once a has left, X is freed and the check,
    /// run by that real free, passes.
    /// </summary>
    [Fact]
    public void A_table_a_stalled_walk_holds_may_not_be_freed_and_the_epochs_keep_it_until_the_walk_leaves()
    {
        AssertionListener.Install();
        using var pool = new NativePagePool();
        using var mmu = new ConcurrentTdpMmu<EptFormat, ScriptedSchedule>(sharedBit: null, pool);
        using var a = mmu.CreateVcpu();
        using var b = mmu.CreateVcpu();
        Assert.Equal(SlotStatus.Ok, mmu.CreateSlot(0, 0, 0x1000, HostBase, 21, readOnly: false));
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(12));
        Assert.False(a.Access(0x1 << 12, AccessType.Read).IsRetry);   // leaf table X
        Assert.False(a.Access(0x201 << 12, AccessType.Read).IsRetry); // leaf table Y, beside it
        ulong x = LeafTableAddress(mmu, 0x0), y = LeafTableAddress(mmu, 0x200);
        Assert.Equal(TdpStatus.Ok, mmu.SetMaxPageSize(21));

        bool checkedInside = false;
        // a's SpteRead points: the root field, then the entries at levels 4, 3, 2 and 1 (in X).
        ScriptedSchedule.At(SchedulePointKind.SpteRead, 5, () =>
        {
            var outcome = b.Access(0x5 << 12, AccessType.Read);
            Assert.Equal(TdpAccessOutcome.Mapped(HostBase << 12 | 0x5000, 21, faulted: true), outcome.Access);
            Assert.Equal(1, mmu.DeferredTablesPending); // X waits: a is inside since before the unlink
            AssertionListener.Fails("walk holds it", () => mmu.DebugAssertNoWalkerHolds(x));
            mmu.DebugAssertNoWalkerHolds(y);
            checkedInside = true;
        });
        Assert.True(a.Access(0x2 << 12, AccessType.Read).IsRetry); // X's entries are frozen
        Assert.True(checkedInside);
        Assert.Equal(0, mmu.DeferredTablesPending);
        Assert.Equal(1, mmu.DeferredTablesFreed);
        ScriptedSchedule.Disarm();
    }

    /// <summary>The address of the leaf table linked at the level-2 entry covering <paramref name="gfn"/>.</summary>
    static ulong LeafTableAddress(ConcurrentTdpMmu<EptFormat, ScriptedSchedule> mmu, ulong gfn)
    {
        ulong address = 0;
        mmu.VisitPages((key, entries) =>
        {
            if (key.Level != 2) return;
            foreach (var e in entries)
                if (!e.IsLeaf && e.Child.Gfn == gfn) address = EptFormat.TableAddress(e.Raw);
        });
        Assert.NotEqual(0UL, address);
        return address;
    }

    /// <summary>A Debug.Assert that fails inside an op under Coyote is that op's exception in a failing, judged-as-failed history.</summary>
    [Fact]
    public void A_failed_debug_assertion_in_an_op_is_reported_as_a_failing_history()
    {
        DebugAssertions.ThrowOnFailure();
        var subject = new ConcurrentSubject<object, ToyState, ToyOp, int>(
            () => new object(),
            (_, _, op) =>
            {
                Debug.Assert(op is not ToyOp.Write, "a toy check that writes fail");
                return 0;
            },
            Toys.Spec);
        var result = ScheduleExploration.Explore(subject, Toys.Program([ToyOp.Get], [new ToyOp.Write(1)]), new ExplorationSettings(5, 20261204));
        Assert.True(result.Failed);
        Assert.Equal(1, result.Iterations);
        Assert.Contains("threw", result.Failure);
        Assert.Contains("a toy check that writes fail", result.Failure);
    }
#endif
}
