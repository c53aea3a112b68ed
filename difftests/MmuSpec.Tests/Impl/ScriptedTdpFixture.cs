using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The VM the scripted race tests of the concurrent TDP MMU share (races forced with <see cref="ScriptedSchedule"/>):
/// an EPT MMU without a shared bit, vCPU A (and B), one 16 MiB slot at gfn 0 on 2 MiB host pages from
/// <see cref="HostBase"/>. Each class says in its constructor (or test) what it changes. Dispose disarms the schedule,
/// so a callback a failed test left armed cannot fire in the next, and checks every pool page came back.
/// Field names are the ones the test bodies already used, so they read (and merge) unchanged.
/// </summary>
public abstract class ScriptedTdpFixture : IDisposable
{
    protected const ulong HostBase = 0x100000;
    protected readonly NativePagePool _pool = new();
    protected ConcurrentTdpMmu<EptFormat, ScriptedSchedule> _mmu = null!;
    protected ConcurrentTdpVcpu<EptFormat, ScriptedSchedule> _a = null!, _b = null!;

    /// <summary>
    /// Builds the VM. <paramref name="maxPageSize"/>: the mapping policy's shift, or null for the MMU's own;
    /// <paramref name="vcpus"/>: 1 (A) or 2 (A, B: every flush request goes to both).
    /// </summary>
    protected void CreateVm(byte? maxPageSize, int vcpus = 2, TdpAccessedDirty ad = TdpAccessedDirty.Untracked, int yieldEvery = 0)
    {
        Assert.InRange(vcpus, 1, 2);
        _mmu = new ConcurrentTdpMmu<EptFormat, ScriptedSchedule>(sharedBit: null, _pool, ad) { RangeWalkYieldEvery = yieldEvery };
        _a = _mmu.CreateVcpu();
        if (vcpus == 2) _b = _mmu.CreateVcpu();
        Assert.Equal(SlotStatus.Ok, _mmu.CreateSlot(0, 0, 0x1000, HostBase, 21, readOnly: false));
        if (maxPageSize is byte shift) Assert.Equal(TdpStatus.Ok, _mmu.SetMaxPageSize(shift));
    }

    public void Dispose()
    {
        ScriptedSchedule.Disarm();
        _mmu?.Dispose();
        Assert.Equal(0, _pool.PagesInUse);
        _pool.Dispose();
    }

    protected static TdpAccessOutcome Mapped(ulong gfn, int shift, bool faulted) => TdpAccessOutcome.Mapped((HostBase + gfn) << 12, shift, faulted);

    /// <summary>The answer of an access that must not have lost a race (the classes that force a loss read the outcome themselves).</summary>
    protected static TdpAccessOutcome NotRetried(TdpVcpuOutcome outcome)
    {
        Assert.False(outcome.IsRetry);
        return outcome.Access;
    }

    /// <summary>Every entry of every linked table.</summary>
    protected List<TdpEntryInfo> Entries()
    {
        var all = new List<TdpEntryInfo>();
        _mmu.VisitPages((_, entries) => all.AddRange(entries));
        return all;
    }
}
