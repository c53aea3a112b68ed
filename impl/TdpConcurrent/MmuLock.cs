using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Concurrency;

namespace MmuSpec.Impl.TdpConcurrent;

/// <summary>
/// KVM's mmu_lock as an rwlock (x86's TDP MMU takes it for read on faults, for write on memslot and
/// policy changes): one int, changed only with Interlocked. Readers count in the low bits; a writer
/// sets <see cref="WriterHeld"/>, and a waiting writer sets <see cref="WriterWaiting"/> so that new
/// readers hold off and it is not starved. Waiting spins and never blocks in the OS: each spin and each
/// acquire and release is a schedule point, so a systematic tester that runs one thread at a time can
/// switch to the holder. A mutable struct: a field of its owner, never copied.
/// </summary>
internal struct MmuLock<TSched> where TSched : struct, ISchedulePoint
{
    private const int WriterHeld = 1 << 30;
    private const int WriterWaiting = 1 << 29;
    private const int ReaderMask = WriterWaiting - 1;

    private int _state;

    public readonly bool IsWriteHeld => (Volatile.Read(in _state) & WriterHeld) != 0;

    public readonly bool IsReadHeld => (Volatile.Read(in _state) & ReaderMask) != 0;

    /// <summary>A writer waits for the lock (what a long walk yields to: KVM's rwlock_needbreak).</summary>
    public readonly bool IsWriterWaiting => (Volatile.Read(in _state) & WriterWaiting) != 0;

    public void EnterRead()
    {
        SpinWait spin = default;
        while (true)
        {
            TSched.Yield(SchedulePointKind.LockAcquire);
            int state = Volatile.Read(ref _state);
            if ((state & (WriterHeld | WriterWaiting)) == 0 && Interlocked.CompareExchange(ref _state, state + 1, state) == state)
                return;
            Spin(ref spin);
        }
    }

    public void ExitRead()
    {
        TSched.Yield(SchedulePointKind.LockRelease);
        int after = Interlocked.Decrement(ref _state);
        Debug.Assert((after & ReaderMask) != ReaderMask && (after & WriterHeld) == 0, "read unlock without a reader");
    }

    public void EnterWrite()
    {
        SpinWait spin = default;
        while (true)
        {
            TSched.Yield(SchedulePointKind.LockAcquire);
            int state = Volatile.Read(ref _state);
            if ((state & ~WriterWaiting) == 0)
            {
                // Free (perhaps with our own, or another writer's, waiting mark, which taking it clears:
                // a writer still waiting sets it again on its next spin).
                if (Interlocked.CompareExchange(ref _state, WriterHeld, state) == state)
                    return;
            }
            else if ((state & WriterWaiting) == 0)
            {
                Interlocked.Or(ref _state, WriterWaiting);
            }
            Spin(ref spin);
        }
    }

    public void ExitWrite()
    {
        TSched.Yield(SchedulePointKind.LockRelease);
        Debug.Assert(IsWriteHeld, "write unlock without the writer");
        Interlocked.And(ref _state, ~WriterHeld);
    }

    /// <summary>A busy wait that may give the core away (sched_yield) but never sleeps on a kernel object.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Spin(ref SpinWait spin) => spin.SpinOnce(sleep1Threshold: -1);
}

/// <summary>
/// A plain spin lock for the few shared structures a fault touches under the read side (the table
/// allocator, the deferred-free list, the flush log, dirty bitmaps): KVM's tdp_mmu_pages_lock plays this
/// part. Held for a few stores; the same schedule points as <see cref="MmuLock{TSched}"/>.
/// </summary>
internal struct SideLock<TSched> where TSched : struct, ISchedulePoint
{
    private int _held;

    public readonly bool IsHeld => Volatile.Read(in _held) != 0;

    public void Enter()
    {
        SpinWait spin = default;
        while (true)
        {
            TSched.Yield(SchedulePointKind.LockAcquire);
            if (Volatile.Read(ref _held) == 0 && Interlocked.CompareExchange(ref _held, 1, 0) == 0)
                return;
            MmuLock<TSched>.Spin(ref spin);
        }
    }

    public void Exit()
    {
        TSched.Yield(SchedulePointKind.LockRelease);
        Debug.Assert(IsHeld, "unlock of a side lock not held");
        Volatile.Write(ref _held, 0);
    }
}
