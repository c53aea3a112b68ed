using System.Diagnostics;
using MmuSpec.Impl.Concurrency;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// When a table unlinked under the read side may be freed: KVM frees such pages from an RCU callback
/// (handle_removed_pt, call_rcu) after every walker that could hold a pointer to them has left its
/// rcu_read_lock section. Here each vCPU publishes, while it walks, the global epoch it read on entry
/// (0 when outside). Unlinking a table and then bumping the epoch gives it a tag; it may be freed once
/// every vCPU inside entered at or after that tag (<see cref="OldestActive"/> &gt;= tag): any of those read
/// the epoch after the unlink, so their walk from the root can no longer reach it.
/// <para>
/// Why a vCPU that read an old epoch but published it late is safe: between publishing and the walk's
/// first read the vCPU takes mmu_lock for read, a compare-and-exchange (a full fence), and unlinking is a
/// compare-and-exchange before the reclaimer reads the slots; so either the reclaimer sees the vCPU
/// inside, or the vCPU's walk sees the unlink.
/// </para>
/// </summary>
internal sealed class Epochs<TSched> where TSched : struct, ISchedulePoint
{
    public const int MaxVcpus = 64;

    /// <summary>The slot of the host's read-side walks (dirty logging's write-protection), one at a time.</summary>
    public const int HostSlot = MaxVcpus;

    // Slots 128 bytes apart: each vCPU writes only its own, and neighbours do not share a line.
    private const int Stride = 16;

    private readonly long[] _active = new long[(MaxVcpus + 1) * Stride];
    private long _global = 1;

    /// <summary>
    /// Publishes the epoch. A plain store: the caller's next step must be a full fence (taking mmu_lock
    /// for read is a compare-and-exchange) before the walk's first read.
    /// </summary>
    public void Enter(int vcpu)
    {
        TSched.Yield(SchedulePointKind.EpochEnter);
        Debug.Assert(Volatile.Read(ref _active[vcpu * Stride]) == 0, "a vCPU entered its epoch twice");
        Volatile.Write(ref _active[vcpu * Stride], Volatile.Read(ref _global));
    }

    public void Exit(int vcpu)
    {
        TSched.Yield(SchedulePointKind.EpochExit);
        Debug.Assert(Volatile.Read(ref _active[vcpu * Stride]) != 0, "a vCPU left an epoch it was not in");
        Volatile.Write(ref _active[vcpu * Stride], 0); // release: every read of the walk comes before
    }

    public bool IsInside(int vcpu) => Volatile.Read(ref _active[vcpu * Stride]) != 0;

    /// <summary>Called after a table was unlinked: its tag.</summary>
    public long Retire() => Interlocked.Increment(ref _global);

    /// <summary>The smallest epoch a vCPU inside entered with, or long.MaxValue when none is inside.</summary>
    public long OldestActive(int vcpus)
    {
        long oldest = long.MaxValue;
        for (int i = 0; i < vcpus; i++)
        {
            long e = Volatile.Read(ref _active[i * Stride]);
            if (e != 0 && e < oldest)
                oldest = e;
        }
        long host = Volatile.Read(ref _active[HostSlot * Stride]);
        return host != 0 && host < oldest ? host : oldest;
    }
}
