using System.IO.MemoryMappedFiles;
using MmuSpec.Impl.Memory;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// Guest physical memory and the native page pool as APIs, at the edges the differential properties do
/// not reach: slot ranges at the top of the 64-bit gpa space, removing slots, lookups exactly at a
/// slot's end (through the last-hit cache and the slow search), the Try* results for unbacked
/// addresses, use after dispose, and the pool's accounting of lazily zeroed runs. Mutation testing found
/// these unchecked (docs/mutation-score.md).
/// </summary>
public sealed unsafe class MemoryContractTests
{
    const ulong GfnLimit = 1UL << 52;   // gfns of the 64-bit guest physical address space

    [Fact]
    public void Slot_ranges_must_lie_in_the_64_bit_gpa_space_and_not_overlap()
    {
        var pool = new NativePagePool();
        using var file = MemoryMappedFile.CreateNew(null, 3 * 4096);
        using var view = file.CreateViewAccessor();
        var host = view.SafeMemoryMappedViewHandle;
        using (var memory = new GuestPhysicalMemory(pool))
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(0x10, 0, host, 0));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(0, GfnLimit, host, 0));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(2, GfnLimit - 1, host, 0));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(GfnLimit, 1, host, 0));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(GfnLimit - 1, 2, host, 0));
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(0x100, 2, host, 2 * 4096)); // past the buffer's end
            Assert.Throws<ArgumentOutOfRangeException>(() => memory.AddExternalSlot(0x100, 1, host, 4 * 4096));
            Assert.Throws<ArgumentException>(() => memory.AddExternalSlot(0x100, 1, host, 4));                  // not 8-byte aligned
            Assert.Empty(memory.Slots);

            memory.AddExternalSlot(GfnLimit - 1, 1, host, 2 * 4096);        // the last page of the space, the buffer's last page
            Assert.True(memory.TryWrite64(ulong.MaxValue - 7, 0x1234));
            Assert.Equal(0x1234UL, view.ReadUInt64(3 * 4096 - 8));
            memory.AddSlot(0x10, 2);
            Assert.Throws<ArgumentException>(() => memory.AddSlot(0x11, 1));
            Assert.Throws<ArgumentException>(() => memory.AddExternalSlot(0xF, 2, host, 0));
            Assert.Throws<ArgumentException>(() => memory.AddExternalSlot(GfnLimit - 1, 1, host, 0));
            Assert.Equal([(GfnLimit - 1, 1UL), (0x10UL, 2UL)], memory.Slots.Select(s => (s.BaseGfn, s.Pages)));
            Assert.Throws<ArgumentNullException>(() => memory.AddExternalSlot(0x100, 1, null!, 0));
        }
        Assert.Equal(0, pool.PagesInUse);
        Assert.Throws<ArgumentNullException>(() => new GuestPhysicalMemory(null!));
    }

    [Fact]
    public void A_removed_slot_returns_its_pages_and_its_addresses_become_unbacked()
    {
        var pool = new NativePagePool();
        using var memory = new GuestPhysicalMemory(pool);
        memory.AddSlot(0x10, 2);
        memory.AddSlot(0x20, 3);
        Assert.Equal(5, pool.PagesInUse);
        Assert.True(memory.TryWrite64(0x20_008, 7));                       // the last-hit slot is now 0x20

        Assert.Throws<ArgumentException>(() => memory.RemoveSlot(0x21)); // not a slot's first frame
        Assert.Equal(2, memory.Slots.Count);
        Assert.Equal(5, pool.PagesInUse);

        memory.RemoveSlot(0x20);
        Assert.Equal(2, pool.PagesInUse);
        Assert.Equal([0x10UL], memory.Slots.Select(s => s.BaseGfn));
        Assert.False(memory.TryRead64(0x20_008, out ulong gone));
        Assert.Equal(0UL, gone);
        Assert.True(memory.HostAddress(0x10_000) != null);

        memory.AddSlot(0x20, 1);                                          // the range can be used again, zeroed
        Assert.True(memory.TryRead64(0x20_008, out ulong fresh));
        Assert.Equal(0UL, fresh);
        memory.RemoveSlot(0x10);
        memory.RemoveSlot(0x20);
        Assert.Equal(0, pool.PagesInUse);
        Assert.Empty(memory.Slots);
    }

    /// <summary>
    /// Slots A and B of one page each, adjacent, and C of 256: an address exactly at A's end is B's first byte, whether the
    /// lookup starts from the last-hit cache (A) or searches the slots (last hit C); a slot not at gpa 0
    /// is addressed by its offset from its base, not from 0.
    /// </summary>
    [Fact]
    public void An_address_at_a_slots_end_belongs_to_the_next_slot_on_both_lookup_paths()
    {
        using var memory = new GuestPhysicalMemory(new NativePagePool());
        memory.AddSlot(0x10, 1);   // A
        memory.AddSlot(0x11, 1);   // B
        memory.AddSlot(0x40, 0x100); // C: gpas 0x40000..0x13FFFF
        Assert.True(memory.TryWrite64(0x11_000, 0xB));
        Assert.True(memory.TryWrite64(0x40_000, 0xC0));
        Assert.True(memory.TryWrite64(0xC0_000, 0xC8));                    // C's base further on

        Assert.True(memory.TryWrite64(0x10_ff8, 0xA));                    // last hit: A
        Assert.True(memory.TryRead64(0x11_000, out ulong viaCache));
        Assert.Equal(0xBUL, viaCache);

        Assert.True(memory.TryRead64(0xC0_000, out ulong c8));             // last hit: C
        Assert.True(memory.TryRead64(0x40_000, out ulong c0));             // through the cache, offset 0 of C
        Assert.Equal((0xC8UL, 0xC0UL), (c8, c0));
        Assert.True(memory.TryRead32(0x11_000, out uint viaSearch));       // from C: the search finds B, not A's end
        Assert.Equal(0xBu, viaSearch);
        Assert.False(memory.TryRead64(0x12_000, out _));                   // B's end: nothing there
        Assert.False(memory.TryRead64(0x140_000, out _));                  // C's end
    }

    [Fact]
    public void Reads_and_writes_of_unbacked_addresses_fail_and_store_nothing()
    {
        var pool = new NativePagePool();
        using var memory = new GuestPhysicalMemory(pool);
        memory.AddSlot(0x10, 1);
        Assert.False(memory.TryRead64(0x9_000, out ulong v64));
        Assert.False(memory.TryRead32(0x9_000, out uint v32));
        Assert.Equal((0UL, 0u), (v64, v32));
        Assert.False(memory.TryWrite64(0x9_000, 1));
        Assert.False(memory.TryWrite32(0x9_004, 1));
        Assert.True(memory.HostAddress(0x9_000) == null);

        Assert.True(memory.TryWrite32(0x10_004, 0xDEAD));
        Assert.True(memory.TryWrite64(0x10_008, 0xBEEF));
        Assert.True(memory.TryRead32(0x10_004, out uint back32));
        Assert.True(memory.TryRead64(0x10_008, out ulong back64));
        Assert.Equal((0xDEADu, 0xBEEFUL), (back32, back64));
        byte[] bytes = memory.SlotBytes(0).ToArray();
        Assert.Equal(4096, bytes.Length);
        Assert.Equal(0xDEADu, BitConverter.ToUInt32(bytes, 4));
        Assert.Equal(0xBEEFUL, BitConverter.ToUInt64(bytes, 8));
        Assert.Equal(4, bytes.Count(b => b != 0));                         // nothing else was written
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.SlotBytes(1).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => memory.SlotBytes(-1).Length);
    }

    [Fact]
    public void Disposed_memory_is_empty_refuses_new_slots_and_can_be_disposed_again()
    {
        var pool = new NativePagePool();
        var memory = new GuestPhysicalMemory(pool);
        memory.AddSlot(0x10, 4);
        memory.Dispose();
        Assert.Equal(0, pool.PagesInUse);
        Assert.Empty(memory.Slots);
        Assert.False(memory.TryRead64(0x10_000, out _));
        Assert.Throws<ObjectDisposedException>(() => memory.AddSlot(0x20, 1));
        Assert.Throws<ObjectDisposedException>(() => memory.RemoveSlot(0x10));
        memory.Dispose();
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void The_pool_counts_lazily_zeroed_runs_and_refuses_bad_counts_and_use_after_dispose()
    {
        var pool = new NativePagePool();
        byte* eager = pool.AllocatePages(2);
        byte* lazy = pool.AllocateLazilyZeroedPages(3);
        Assert.Equal((5L, 3L), (pool.PagesInUse, pool.LazilyZeroedPagesInUse));
        Assert.Equal(0UL, *(ulong*)(lazy + 3 * 4096 - 8));                  // reads as zero to its last word
        pool.FreeLazilyZeroedPages(lazy, 3);
        Assert.Equal((2L, 0L), (pool.PagesInUse, pool.LazilyZeroedPagesInUse));
        Assert.Equal(5L, pool.PagesAllocated);

        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocateLazilyZeroedPages(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocatePages(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.AllocatePages(1, alignmentPages: 3));
        var tooMany = Assert.Throws<OutOfMemoryException>(() => pool.AllocateLazilyZeroedPages(long.MaxValue));
        Assert.Contains("do not fit in the address space", tooMany.Message);
        Assert.Equal(2L, pool.PagesInUse);

        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.AllocatePages(1));
        Assert.Throws<ObjectDisposedException>(() => pool.AllocateLazilyZeroedPages(1));
        pool.FreePages(eager, 2);                                            // owners may free after the pool is disposed
        Assert.Equal(0, pool.PagesInUse);
    }
}
