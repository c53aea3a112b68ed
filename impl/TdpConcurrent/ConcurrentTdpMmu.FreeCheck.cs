using System.Diagnostics;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// DEBUG: a table page is never freed while a vCPU's walk holds a pointer into it (what RCU guarantees KVM's
/// lockless walkers, handle_removed_pt's call_rcu). Each walk under the read side publishes, per level, the
/// table it reached from its parent entry, and clears them when it leaves its epoch; every free of a deferred
/// table asserts that no vCPU holds it. The check does not trust the epochs it guards: a free the epochs should
/// have held back (upstream 7cca2d0b7e7d's bug) fails it as soon as any walker stopped anywhere below the
/// unlinked entry, not only when that walker's next read happens to land on the freed page. Release builds
/// compile the calls away (<see cref="ConditionalAttribute"/>).
/// </summary>
public sealed partial class ConcurrentTdpMmu<TFormat, TSched>
{
#if DEBUG
    // Slot [vcpu * 8 + level]: the table at that level the vCPU's walk holds (0: none).
    private readonly ulong[] _walking = new ulong[MaxVcpus * 8];
#endif

    /// <summary>The walk of <paramref name="vcpu"/> holds <paramref name="table"/> (at <paramref name="level"/>) from now on.</summary>
    [Conditional("DEBUG")]
    private void DebugWalking(int vcpu, TableRef table, int level)
    {
#if DEBUG
        Volatile.Write(ref _walking[vcpu * 8 + level], table.Address);
#endif
    }

    /// <summary>The walk of <paramref name="vcpu"/> holds no table any more (it is about to leave its epoch).</summary>
    [Conditional("DEBUG")]
    private void DebugWalkDone(int vcpu)
    {
#if DEBUG
        for (int level = 0; level < 8; level++)
            Volatile.Write(ref _walking[vcpu * 8 + level], 0);
#endif
    }

    /// <summary>Asserts that no vCPU's walk holds the table at <paramref name="address"/>, about to be freed.</summary>
    [Conditional("DEBUG")]
    internal void DebugAssertNoWalkerHolds(ulong address)
    {
#if DEBUG
        int vcpus = Volatile.Read(ref _vcpuCount);
        for (int i = 0; i < vcpus * 8; i++)
            if (Volatile.Read(ref _walking[i]) == address)
                Debug.Fail($"a table page (0x{address:X}) freed while vCPU {i / 8}'s walk holds it at level {i % 8}: a walker would read freed memory");
#endif
    }
}
