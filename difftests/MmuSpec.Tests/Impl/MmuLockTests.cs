using MmuSpec.Impl.Concurrency;
using MmuSpec.Impl.TdpConcurrent;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The concurrent TDP MMU's mmu_lock (impl/TdpConcurrent/MmuLock.cs) on real threads, bounded by counts:
/// writers move a value between two plain fields, so a reader that ever overlaps a writer (or two
/// writers that overlap) sees them disagree or loses an update.
/// </summary>
public sealed class MmuLockTests
{
    sealed class Shared
    {
        public MmuLock<NoSchedulePoints> Lock;
        public SideLock<NoSchedulePoints> Side;
        public long Left, Right, Total;
    }

    [Fact]
    public void Readers_never_overlap_a_writer_and_writers_exclude_each_other()
    {
        const int Writers = 2, Readers = 2, WritesEach = 20_000, ReadsEach = 50_000;
        var s = new Shared();
        long torn = 0, reads = 0;
        var threads = new List<Thread>();
        for (int w = 0; w < Writers; w++)
            threads.Add(new Thread(() =>
            {
                for (int i = 0; i < WritesEach; i++)
                {
                    s.Lock.EnterWrite();
                    s.Left++;
                    Thread.SpinWait(5); // widen the window in which a reader could slip in
                    s.Right++;
                    s.Lock.ExitWrite();
                }
            }));
        for (int r = 0; r < Readers; r++)
            threads.Add(new Thread(() =>
            {
                for (int i = 0; i < ReadsEach; i++)
                {
                    s.Lock.EnterRead();
                    if (Volatile.Read(ref s.Left) != Volatile.Read(ref s.Right))
                        Interlocked.Increment(ref torn);
                    Interlocked.Increment(ref reads);
                    s.Lock.ExitRead();
                }
            }));
        foreach (var t in threads)
            t.Start();
        foreach (var t in threads)
            t.Join();
        Assert.Equal(0, torn);
        Assert.Equal(Readers * ReadsEach, reads);
        Assert.Equal(Writers * WritesEach, s.Left); // no lost update: writers never overlapped
        Assert.Equal(s.Left, s.Right);
        Assert.False(s.Lock.IsReadHeld || s.Lock.IsWriteHeld);
    }

    [Fact]
    public void The_side_lock_excludes()
    {
        const int ThreadsN = 3, Each = 50_000;
        var s = new Shared();
        var threads = Enumerable.Range(0, ThreadsN).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < Each; i++)
            {
                s.Side.Enter();
                s.Total = s.Total + 1; // a plain read-modify-write: lost if two threads overlap
                s.Side.Exit();
            }
        })).ToList();
        foreach (var t in threads)
            t.Start();
        foreach (var t in threads)
            t.Join();
        Assert.Equal(ThreadsN * Each, s.Total);
        Assert.False(s.Side.IsHeld);
    }
}
