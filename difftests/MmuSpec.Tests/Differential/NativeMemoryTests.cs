using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Walk;
using MmuSpec.Impl.Memory;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>Native memory accounting: every page the impl allocates is freed.</summary>
public sealed class NativeMemoryTests
{
    [Fact]
    public void Every_page_allocated_for_a_walk_case_is_freed_when_its_engine_is_disposed()
    {
        var pool = new NativePagePool();
        long expectedPages = WalkGen.Slots.Sum(s => (long)s.Pages);
        for (int seed = 0; seed < 50; seed++)
        {
            var c = WalkGen.Build(seed, size: 30, mode: null);
            using (var engine = ImplWalkEngine.Boot(c, pool))
            {
                if (engine is null) continue;
                Assert.Equal(expectedPages, pool.PagesInUse);
                foreach (var op in c.Ops) engine.Step(op);
            }
            Assert.Equal(0, pool.PagesInUse);
        }
        Assert.True(pool.PagesAllocated > 0);
        Assert.Equal(pool.PagesAllocated, pool.PagesFreed);
    }

    // Issue 19: a campaign builds and destroys an MMU per case; fresh native memory for every case cost
    // page faults and memsets (a third of the walk family's time). A freed run now serves the next request of
    // its size on the same thread, from any pool, zeroed. Each test runs on a thread of its own, whose cache
    // starts empty.
    [Fact]
    public unsafe void A_freed_run_serves_the_next_request_of_its_size_on_the_thread_zeroed() => OnFreshThread(() =>
    {
        var first = new NativePagePool();
        byte* a = first.AllocatePages(5);
        a[0] = 1; a[5 * NativePagePool.PageSize - 1] = 2;
        first.FreePages(a, 5);
        Assert.Equal(0, first.PagesInUse);

        var second = new NativePagePool();
        byte* b = second.AllocatePages(5);
        Assert.Equal(1, second.RunsReused);
        Assert.Equal((nuint)a, (nuint)b);
        Assert.Equal(-1, new ReadOnlySpan<byte>(b, 5 * NativePagePool.PageSize).IndexOfAnyExcept((byte)0));
        Assert.Equal(5, second.PagesInUse);
        byte* other = second.AllocatePages(5);   // nothing left to reuse
        Assert.Equal(1, second.RunsReused);
        second.FreePages(b, 5);
        second.FreePages(other, 5);
        Assert.Equal(0, second.PagesInUse);
    });

    [Fact]
    public unsafe void A_freed_host_memory_run_is_reused_with_the_pages_it_wrote_zeroed() => OnFreshThread(() =>
    {
        var first = new NativePagePool();
        var host = new HostMemory(first, 600);
        byte* run = host.Base;
        host.Store(0, 0x1111, 8);
        host.Store(599UL * NativePagePool.PageSize + 8, 0x2222, 4);
        host.Free();
        Assert.Equal(0, first.PagesInUse);
        Assert.Equal(0, first.LazilyZeroedPagesInUse);

        var second = new NativePagePool();
        var again = new HostMemory(second, 1000);   // reserved in the same power-of-two size
        Assert.Equal(1, second.RunsReused);
        Assert.Equal((nuint)run, (nuint)again.Base);
        Assert.Equal(0UL, *(ulong*)again.Base);
        Assert.Equal(0U, *(uint*)(again.Base + 599 * NativePagePool.PageSize + 8));
        var words = new List<(ulong, ulong)>();
        again.Visit(0, (hpa, value) => words.Add((hpa, value)));
        Assert.Empty(words);
        Assert.Equal(1000, second.LazilyZeroedPagesInUse);
        again.Free();
        Assert.Equal(0, second.PagesInUse);
    });

    static void OnFreshThread(Action test)
    {
        Exception? failure = null;
        var thread = new Thread(() => { try { test(); } catch (Exception e) { failure = e; } });
        thread.Start();
        thread.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
    }

    [Fact]
    public unsafe void A_pool_counts_allocations_and_frees_separately()
    {
        var pool = new NativePagePool();
        byte* a = pool.AllocatePages(3);
        byte* b = pool.AllocatePages(1);
        Assert.Equal(4, pool.PagesInUse);
        Assert.Equal(0, (long)a % NativePagePool.PageSize);
        Assert.Equal(0, a[3 * NativePagePool.PageSize - 1]);   // zeroed
        pool.FreePages(a, 3);
        Assert.Equal(1, pool.PagesInUse);
        pool.FreePages(b, 1);
        Assert.Equal(0, pool.PagesInUse);
        Assert.Equal(4, pool.PagesFreed);
    }

    [Fact]
    public void Overlapping_memslots_are_rejected_and_leave_memory_unchanged()
    {
        var pool = new NativePagePool();
        using (var memory = new GuestPhysicalMemory(pool))
        {
            memory.AddSlot(0x10, 4);
            Assert.Throws<ArgumentException>(() => memory.AddSlot(0x12, 4));
            Assert.Single(memory.Slots);
            Assert.Equal(4, pool.PagesInUse);
        }
        Assert.Equal(0, pool.PagesInUse);
    }
}
