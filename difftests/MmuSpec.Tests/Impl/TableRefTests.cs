using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.PageTable;
using MmuSpec.Impl.Tdp;
using Xunit;

namespace MmuSpec.Tests.Impl;

/// <summary>
/// The pointer boundaries of the page-table code (<see cref="TableRef"/>, <see cref="PteRef"/>, the TDP page
/// allocator): in a DEBUG build a misaligned table, a level outside 1..5, an entry index outside the table,
/// a table used or freed at another level fail their Debug.Assert, observed here through a trace listener
/// that turns an assertion into an exception. In Release the asserts are gone and a table costs one pointer.
/// </summary>
public sealed class TableRefTests
{
    const ulong EptAddressMask = ((1UL << 52) - 1) & ~0xFFFUL;

    static TableRefTests() => AssertionListener.Install();

    [Fact]
    public void A_table_reads_and_writes_its_512_entries_and_names_its_address()
    {
        var pool = new NativePagePool();
        var pages = new TdpPageAllocator(pool, EptAddressMask);
        TableRef table = pages.Allocate(0, level: 2, mirror: false);
        Assert.False(table.IsNull);
        Assert.Equal(0UL, table.Address & 0xFFF);
        Assert.Equal(table, TableRef.At(table.Address, 2));
        table[0] = 0x1111;
        table[511] = 0x2222;
        Assert.Equal((0x1111UL, 0x2222UL, 0UL), (table[0], table[511], table[1]));

        var pte = new PteRef(table, 511, 2, frame: 0x3FE00, value: 0x2222);
        pte.Write(0x3333);
        Assert.Equal((511, 0x3333UL), (pte.Index, table[511]));
        pte.Clear();
        Assert.Equal(0UL, pte.Current);

        pages.Free(table, 2);
        Assert.Equal(0L, pages.TablesInUse);
        pages.ReleaseAll();
        Assert.Equal(0, pool.PagesInUse);
        Assert.True(default(TableRef).IsNull);
    }

#if DEBUG
    [Fact]
    public void A_table_address_that_is_not_page_aligned_fails_its_assertion()
    {
        var pool = new NativePagePool();
        var pages = new TdpPageAllocator(pool, EptAddressMask);
        TableRef table = pages.Allocate(0, level: 1, mirror: false);
        try
        {
            AssertionListener.Fails("not page aligned", () => TableRef.At(table.Address + 8, 1));
            AssertionListener.Fails("not page aligned", () => TableRef.At(table.Address + 0x800, 1));
            AssertionListener.Fails("a table at address 0", () => TableRef.At(0, 1));
        }
        finally
        {
            pages.ReleaseAll();
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void A_level_outside_1_to_5_or_a_table_used_at_another_level_fails_its_assertion()
    {
        var pool = new NativePagePool();
        var pages = new TdpPageAllocator(pool, EptAddressMask);
        TableRef table = pages.Allocate(0, level: 2, mirror: false);
        try
        {
            AssertionListener.Fails("level is 1..5", () => TableRef.At(table.Address, 0));
            AssertionListener.Fails("level is 1..5", () => TableRef.At(table.Address, 6));
            AssertionListener.Fails("another level", () => table.AssertLevel(1));
            AssertionListener.Fails("another level", () => new PteRef(table, 0, 3, 0, 0));
            AssertionListener.Fails("another level than its header's", () => pages.Free(TableRef.At(table.Address, 1), 1));
            table.AssertLevel(2);
        }
        finally
        {
            pages.ReleaseAll();
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void A_table_freed_twice_or_to_an_allocator_that_did_not_hand_it_out_fails_its_assertion()
    {
        var pool = new NativePagePool();
        var mine = new TdpPageAllocator(pool, EptAddressMask);
        var other = new TdpPageAllocator(pool, EptAddressMask);
        TableRef table = mine.Allocate(0, level: 1, mirror: false);
        _ = other.Allocate(0, level: 1, mirror: false);
        try
        {
            AssertionListener.Fails("outside this allocator's slabs", () => other.Free(table, 1));
            mine.Free(table, 1);
            AssertionListener.Fails("double free", () => mine.Free(table, 1));
        }
        finally
        {
            mine.ReleaseAll();
            other.ReleaseAll();
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void An_entry_index_outside_0_to_511_fails_its_assertion()
    {
        var pool = new NativePagePool();
        var pages = new TdpPageAllocator(pool, EptAddressMask);
        TableRef table = pages.Allocate(0, level: 1, mirror: false);
        try
        {
            AssertionListener.Fails("entry index outside the table", () => table[512] = 1);
            AssertionListener.Fails("entry index outside the table", () => _ = table[-1]);
            AssertionListener.Fails("entry index outside the table", () => new PteRef(table, 512, 1, 0, 0));
            AssertionListener.Fails("entry of no table", () => _ = default(TableRef)[0]);
            Assert.Equal(0UL, table[511]);
        }
        finally
        {
            pages.ReleaseAll();
        }
        Assert.Equal(0, pool.PagesInUse);
    }
#else
    [Fact]
    public void In_release_a_table_is_one_pointer()
    {
        Assert.Equal(IntPtr.Size, Unsafe.SizeOf<TableRef>());
        Assert.Equal(32, Unsafe.SizeOf<PteRef>()); // four fields: the JIT keeps it in registers
    }
#endif
}

/// <summary>
/// Turns a failed Debug.Assert into an <see cref="AssertionFailedException"/> (instead of the default
/// fail-fast), first among the trace listeners, for every test in the process.
/// </summary>
internal static class AssertionListener
{
    static readonly object Gate = new();
    static bool installed;

    public static void Install()
    {
        lock (Gate)
        {
            if (installed)
                return;
            Trace.Listeners.Insert(0, new Listener());
            installed = true;
        }
    }

    /// <summary>Runs <paramref name="action"/> and checks that it failed an assertion whose message contains <paramref name="fragment"/>.</summary>
    public static void Fails(string fragment, Action action)
    {
        var failure = Assert.ThrowsAny<Exception>(action);
        var assertion = failure as AssertionFailedException ?? failure.InnerException as AssertionFailedException;
        Assert.True(assertion is not null, $"expected a failed assertion, got {failure}");
        Assert.Contains(fragment, assertion!.Message);
    }

    public sealed class AssertionFailedException(string message) : Exception(message);

    sealed class Listener : TraceListener
    {
        public override void Fail(string? message, string? detailMessage) =>
            throw new AssertionFailedException($"assertion failed: {message} {detailMessage}");

        public override void Fail(string? message) => Fail(message, null);

        public override void Write(string? message) { }

        public override void WriteLine(string? message) { }
    }
}
