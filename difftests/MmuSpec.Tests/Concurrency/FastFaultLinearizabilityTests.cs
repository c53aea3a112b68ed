using System.Collections.Immutable;
using MmuSpec.Harness.Concurrency;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.TdpConcurrent;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;
using Xunit;
using Xunit.Abstractions;
using static MmuSpec.Tests.Concurrency.CoyoteExploration;
using static MmuSpec.Tests.TdpSteps;
using ImplAccess = MmuSpec.Impl.Paging.AccessType;
using ImplTdp = MmuSpec.Impl.Tdp;

namespace MmuSpec.Tests.Concurrency;

/// <summary>
/// The lockless fast page fault (ConcurrentTdpMmu.FastFault.cs) under Coyote's controlled scheduler.
/// First against the sequential spec: fast faults on gfns dirty logging protected, racing GetDirtyLog and
/// SetDirtyLogging on the same gfns. Then write tracking (ConcurrentTdpMmu.WriteProtect.cs), which the
/// spec does not model, against a small spec of its own: a tracked gfn is never writable, so once
/// TrackWrites returned a write to it exits and no leaf for it stays writable. That exploration catches
/// difftests/mutants/concurrency/by-test/wrprot-skips-read-only-leaves.patch (upstream 7c8a4742c4ab). 150 schedules
/// per program and strategy, seed 20261204, as ConcurrentTdpLinearizabilityTests.
/// </summary>
[Collection(nameof(CoyoteCollection))]
public class FastFaultLinearizabilityTests(ITestOutputHelper output)
{
    const uint Iterations = 150, Seed = 20261204;

    static readonly VmConfig Config = new(TdpFormat.Ept);

    // One logging slot mapped at 4 KiB: a read maps a read-only leaf that is still MMU-writable.
    static readonly TdpOp[] Setup =
    [
        Slot(PageSize.Size2M),
        new TdpOp.SetMaxPageSize(PageSize.Size4K),
        new TdpOp.SetDirtyLogging(0, On: true),
    ];

    /// <summary>Fast faults on two gfns while another thread fetches the log and turns logging off and on.</summary>
    public static readonly ConcurrentProgram<TdpOp> FastFaultsAndDirtyLog = new(
    [
        [Read(0x1), Write(0x1), Write(0x2)],
        [Read(0x2), new TdpOp.GetDirtyLog(0), Write(0x1)],
        [new TdpOp.SetDirtyLogging(0, false), new TdpOp.SetDirtyLogging(0, true), Write(0x2), new TdpOp.GetDirtyLog(0)],
    ]);

    [Fact]
    public void Fast_faults_racing_dirty_log_fetches_and_logging_changes_are_linearizable_to_the_spec()
    {
        long taken = 0, refused = 0;
        foreach (var strategy in Strategies)
        {
            int checkedRuns = 0;
            var subject = ConcurrentTdpSubject.Create<EptFormat, CoyoteSchedulePoint>(Config, Setup, 3, vm =>
            {
                checkedRuns++;
                taken += vm.Mmu.FastFaultsTaken;
                refused += vm.Mmu.FastFaultsRefused;
            });
            var result = ExploreOrFail(subject, FastFaultsAndDirtyLog, "fastpf-lincheck", strategy, Iterations, Seed);
            Assert.Equal((int)Iterations, result.Iterations);
            Assert.InRange(checkedRuns, (int)Iterations - 5, (int)Iterations);
            output.WriteLine($"{strategy}: {Iterations} schedules, {checkedRuns} checked; fast faults taken {taken}, refused {refused} so far");
        }
        // Not vacuous: writes were fixed without mmu_lock, and some lost their exchange to another vCPU's.
        Assert.True(taken > 0, "no fast fault was taken");
        Assert.True(refused > 0, "no fast fault was refused");
    }

    // ---- write tracking ----

    /// <summary>An op of the write-tracking programs: a read or write of a gfn, or tracking it.</summary>
    public sealed record TrackOp(char Kind, ulong Gfn)
    {
        public override string ToString() => $"{Kind switch { 'R' => "Read", 'W' => "Write", _ => "Track" }}(0x{Gfn:X})";
    }

    /// <summary>What the spec of write tracking keeps: the tracked gfns and the gfns a writable leaf maps.</summary>
    public sealed record TrackState(ImmutableSortedSet<ulong> Tracked, ImmutableSortedSet<ulong> Writable)
    {
        public bool Equals(TrackState? other) => other is not null && Tracked.SequenceEqual(other.Tracked) && Writable.SequenceEqual(other.Writable);

        public override int GetHashCode() => HashCode.Combine(Tracked.Count, Writable.Count);

        public override string ToString() => $"tracked [{string.Join(",", Tracked)}] writable [{string.Join(",", Writable)}]";
    }

    /// <summary>
    /// In one logging slot at 4 KiB: a read maps (read-only); a write to a tracked gfn exits for emulation,
    /// any other write maps it writable; tracking write-protects the gfn. An access may also answer Retry
    /// with nothing changed.
    /// </summary>
    sealed class TrackSpec : ISequentialSpec<TrackState, TrackOp, string>
    {
        public TrackState Initial { get; } = new([], []);

        public (string Result, TrackState Next) Step(TrackState s, TrackOp op) => op.Kind switch
        {
            'R' => ("Mapped", s),
            'W' when s.Tracked.Contains(op.Gfn) => ("Exit", s),
            'W' => ("Mapped", s with { Writable = s.Writable.Add(op.Gfn) }),
            _ => ("Ok", new TrackState(s.Tracked.Add(op.Gfn), s.Writable.Remove(op.Gfn))),
        };

        public IEnumerable<(string Result, TrackState Next)> Outcomes(TrackState s, TrackOp op) =>
            op.Kind == 'T' ? [Step(s, op)] : [Step(s, op), ("Retry", s)];
    }

    sealed class TrackVm : IDisposable
    {
        readonly NativePagePool _pool = new();
        readonly List<ConcurrentTdpVcpu<EptFormat, CoyoteSchedulePoint>> _vcpus = [];

        public TrackVm(int vcpus)
        {
            Mmu = new ConcurrentTdpMmu<EptFormat, CoyoteSchedulePoint>(sharedBit: null, _pool);
            Assert.Equal(SlotStatus.Ok, Mmu.CreateSlot(0, 0, 0x400, 0x100000, 21, readOnly: false));
            Assert.Equal(ImplTdp.TdpStatus.Ok, Mmu.SetMaxPageSize(12));
            Assert.Equal(SlotStatus.Ok, Mmu.SetDirtyLogging(0, true));
            for (int i = 0; i < vcpus; i++) _vcpus.Add(Mmu.CreateVcpu());
        }

        public ConcurrentTdpMmu<EptFormat, CoyoteSchedulePoint> Mmu { get; }

        public string Apply(int thread, TrackOp op)
        {
            if (op.Kind == 'T')
                return Mmu.TrackWrites(op.Gfn) == ImplTdp.TdpStatus.Ok ? "Ok" : "Rejected";
            var o = _vcpus[thread].Access(op.Gfn << 12, op.Kind == 'W' ? ImplAccess.Write : ImplAccess.Read);
            return o.IsRetry ? "Retry" : o.Access.Status switch
            {
                ImplTdp.TdpAccessStatus.Mapped => "Mapped",
                ImplTdp.TdpAccessStatus.MmioExit => "Exit",
                _ => "Rejected",
            };
        }

        public TrackState Observe()
        {
            var writable = ImmutableSortedSet.CreateBuilder<ulong>();
            Mmu.VisitPages((_, entries) =>
            {
                foreach (var e in entries)
                    if (e.IsLeaf && e.Writable) writable.Add(e.LeafGfn);
            });
            return new([.. Mmu.TrackedGfns], writable.ToImmutable());
        }

        public void Dispose()
        {
            foreach (var v in _vcpus) v.Dispose();
            Mmu.Dispose();
            _pool.Dispose();
        }
    }

    /// <summary>
    /// Reads leave read-only, MMU-writable leaves (the slot logs); tracking must take MMU-writable away from
    /// them too, or a racing or later write is fixed by the fast fault and the tracked gfn is writable.
    /// </summary>
    public static readonly ConcurrentProgram<TrackOp> ReadsTrackingAndWrites = new(
    [
        [new('R', 1), new('T', 1), new('W', 2)],
        [new('W', 1), new('R', 2), new('W', 1)],
        [new('R', 2), new('T', 2), new('W', 1)],
    ]);

    [Fact]
    public void Write_tracking_racing_fast_faults_never_leaves_a_tracked_gfn_writable()
    {
        long taken = 0, exits = 0;
        foreach (var strategy in Strategies)
        {
            int checkedRuns = 0;
            var subject = new ConcurrentSubject<TrackVm, TrackState, TrackOp, string>(
                () => new TrackVm(3),
                (vm, thread, op) =>
                {
                    string r = vm.Apply(thread, op);
                    if (r == "Exit") exits++;
                    return r;
                },
                new TrackSpec(),
                vm => { checkedRuns++; taken += vm.Mmu.FastFaultsTaken; return vm.Observe(); });
            ExploreOrFail(subject, ReadsTrackingAndWrites, "fastpf-track", strategy, Iterations, Seed);
            Assert.InRange(checkedRuns, (int)Iterations - 5, (int)Iterations);
            output.WriteLine($"{strategy}: {Iterations} schedules, {checkedRuns} checked; fast faults taken {taken}, writes exited {exits} so far");
        }
        Assert.True(taken > 0, "no fast fault was taken");
        Assert.True(exits > 0, "no write to a tracked gfn exited");
    }
}
