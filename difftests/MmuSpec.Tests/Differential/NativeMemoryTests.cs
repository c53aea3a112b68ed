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
