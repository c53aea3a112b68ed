using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Issue 19: a large VM's table slabs are carved from 2 MiB chunks advised for transparent huge pages
/// (NativePagePool.AllocateHugePageChunk, TdpPageAllocator). The chunk must be aligned, zeroed and counted
/// like any run, every slab carved from it aligned to its own size (headers are found from the address),
/// no slab handed out twice, and every chunk returned when the VM goes.
/// </summary>
public sealed unsafe class HugePageChunkTests
{
    const int ChunkPages = NativePagePool.HugePageChunkPages;
    const int SlabPages = 64, TablesPerSlab = 63, SlabsBeforeChunks = 16, SlabsPerChunk = 8;

    [Fact]
    public void A_chunk_is_2_MiB_aligned_zeroed_advised_where_the_kernel_has_huge_pages_and_counted_until_freed()
    {
        var pool = new NativePagePool();
        byte* chunk = pool.AllocateHugePageChunk();
        Assert.Equal(512, ChunkPages);
        Assert.Equal(0UL, (ulong)chunk & ((2UL << 20) - 1));
        var bytes = new Span<byte>(chunk, ChunkPages * NativePagePool.PageSize);
        Assert.Equal(-1, bytes.IndexOfAnyExcept((byte)0));
        bytes[0] = 1;
        bytes[^1] = 2;                                                       // writable to its last byte
        Assert.Equal((512L, 1L), (pool.PagesInUse, pool.HugePageChunksInUse));
        // madvise(MADV_HUGEPAGE) is refused only by a kernel built without THP (or off Linux, never called).
        bool kernelHasThp = OperatingSystem.IsLinux() && Directory.Exists("/sys/kernel/mm/transparent_hugepage");
        Assert.Equal(kernelHasThp ? 1 : 0, pool.HugePageChunksAdvised);

        pool.Dispose();
        pool.FreeHugePageChunk(chunk);                                       // owners may free after the pool is disposed
        Assert.Equal((0L, 0L, 512L), (pool.PagesInUse, pool.HugePageChunksInUse, pool.PagesFreed));
        Assert.Throws<ObjectDisposedException>(() => pool.AllocateHugePageChunk());
    }

#if DEBUG
    [Fact]
    public void Debug_builds_refuse_a_chunk_freed_twice_or_through_another_method()
    {
        var pool = new NativePagePool();
        byte* chunk = pool.AllocateHugePageChunk();
        var wrong = Assert.Throws<InvalidOperationException>(() => pool.FreePages(chunk, ChunkPages));
        Assert.Contains("AllocateHugePageChunk but freed with FreePages", wrong.Message);
        pool.FreeHugePageChunk(chunk);
        Assert.Throws<InvalidOperationException>(() => pool.FreeHugePageChunk(chunk));
        Assert.Equal(0, pool.PagesInUse);
    }
#endif

    /// <summary>
    /// Faults one page per 2 MiB region of a 3 GiB slot until the VM holds 16 ordinary slabs, then a chunk's
    /// 8 slabs, then one more: the pool sees 64 pages per ordinary slab and 512 per chunk, exactly when the
    /// next slab is needed (a chunk carved into more or fewer slabs, or slabs from a chunk taken too early,
    /// changes the counts). Every table keeps its own header (a slab carved off its alignment would find
    /// another page's) and every translation holds (a slab handed out twice would share tables).
    /// </summary>
    [Theory]
    [InlineData(TdpFormatKind.Ept)]
    [InlineData(TdpFormatKind.Stage2)]
    public void Past_sixteen_slabs_a_vm_carves_its_slabs_from_2_MiB_chunks_and_returns_them_all(TdpFormatKind format)
    {
        const ulong HostPfn = 0x10_0000, Regions = 1536;                     // 3 GiB of 2 MiB regions
        var pool = new NativePagePool();
        using (var vm = TdpVm.Create(format, sharedBit: null, pool))
        {
            Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, Regions * 512, HostPfn, 12, readOnly: false));
            long hostPages = pool.PagesInUse;
            long TablePoolPages() => pool.PagesInUse - hostPages;

            ulong region = 0;
            void FaultUntil(long tables)
            {
                while (vm.TablePages < tables)
                {
                    var outcome = vm.Access((region << 21) | ((region % 512) << 12), AccessType.Write);
                    Assert.True(outcome.Faulted);
                    region++;
                }
            }

            FaultUntil(SlabsBeforeChunks * TablesPerSlab);
            Assert.Equal(SlabsBeforeChunks * SlabPages, TablePoolPages());
            Assert.Equal(0, pool.HugePageChunksInUse);
            FaultUntil(SlabsBeforeChunks * TablesPerSlab + 1);                // the 17th slab: the first chunk
            Assert.Equal(SlabsBeforeChunks * SlabPages + ChunkPages, TablePoolPages());
            Assert.Equal(1, pool.HugePageChunksInUse);
            FaultUntil((SlabsBeforeChunks + SlabsPerChunk) * TablesPerSlab);  // the chunk's 8 slabs full
            Assert.Equal(SlabsBeforeChunks * SlabPages + ChunkPages, TablePoolPages());
            FaultUntil((SlabsBeforeChunks + SlabsPerChunk) * TablesPerSlab + 1); // the 25th slab: a second chunk
            Assert.Equal(SlabsBeforeChunks * SlabPages + 2 * ChunkPages, TablePoolPages());
            Assert.Equal(2, pool.HugePageChunksInUse);

            // Every page's header names the range its place in the tree says it covers.
            var expected = new HashSet<TdpPageKey> { new(0, 4, false), new(0, 3, false) };
            for (ulong gig = 0; gig <= (region - 1) >> 9; gig++)
                expected.Add(new TdpPageKey(gig << 18, 2, false));
            for (ulong r = 0; r < region; r++)
                expected.Add(new TdpPageKey(r << 9, 1, false));
            var seen = new HashSet<TdpPageKey>();
            vm.VisitPages((key, _) => Assert.True(seen.Add(key), $"page {key} visited twice"));
            Assert.Equal(expected.Count, (int)vm.TablePages);
            Assert.True(expected.SetEquals(seen));
            for (ulong r = 0; r < region; r++)
            {
                ulong gfn = (r << 9) | (r % 512);
                var hit = vm.Access(gfn << 12, AccessType.Read);
                Assert.Equal((TdpAccessStatus.Mapped, false, (HostPfn + gfn) << 12), (hit.Status, hit.Faulted, hit.Hpa));
            }

            // A zap keeps the slabs and chunks; faulting again takes no new memory.
            Assert.Equal(TdpStatus.Ok, vm.ZapAll());
            Assert.Equal(0, vm.TablePages);
            region = 0;
            FaultUntil((SlabsBeforeChunks + SlabsPerChunk) * TablesPerSlab + 1);
            Assert.Equal(SlabsBeforeChunks * SlabPages + 2 * ChunkPages, TablePoolPages());
        }
        Assert.Equal((0L, 0L), (pool.PagesInUse, pool.HugePageChunksInUse));
    }
}
