using MmuSpec.Harness.Tdp;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;
using MmuSpec.Spec.Tdp;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The impl's TDP VM as an API (ITdpVm): a destroyed VM refuses every call instead of touching
/// freed native pages, null arguments are refused, and destroying twice is harmless. The
/// differential properties never call a destroyed VM, so nothing else checks these guards
/// (mutation testing found them all unchecked; docs/mutation-score.md).
/// </summary>
public sealed class TdpVmContractTests
{
    static ITdpVm MappedVm(NativePagePool pool)
    {
        var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, pool);
        Assert.Equal(TdpStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 21, readOnly: false));
        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x20_1000, AccessType.Write).Status);
        return vm;
    }

    public static TheoryData<string> Calls() => [.. CallsOn.Keys];

    static readonly Dictionary<string, Action<ITdpVm>> CallsOn = new()
    {
        ["CreateSlot"] = vm => vm.CreateSlot(1, 0x1000, 1, 0x9000, 12, readOnly: false),
        ["DeleteSlot"] = vm => vm.DeleteSlot(0),
        ["MoveSlot"] = vm => vm.MoveSlot(0, 0x4000),
        ["SetDirtyLogging"] = vm => vm.SetDirtyLogging(0, true),
        ["GetDirtyLog"] = vm => vm.GetDirtyLog(0, []),
        ["Access"] = vm => vm.Access(0x20_1000, AccessType.Read),
        ["ZapRange"] = vm => vm.ZapRange(0x200, 0x201),
        ["ZapAll"] = vm => vm.ZapAll(),
        ["SetMaxPageSize"] = vm => vm.SetMaxPageSize(12),
        ["TakeFlushes"] = vm => vm.TakeFlushes(),
        ["VisitPages"] = vm => vm.VisitPages((_, _) => { }),
        ["GuestStore"] = vm => vm.GuestStore(0x20_1000, 1, 8),
        ["GuestSetPaging"] = vm => vm.GuestSetPaging(null, 0),
        ["GuestAccess"] = vm => vm.GuestAccess(0x1000, AccessType.Read, Privilege.Supervisor),
        ["VisitHostMemory"] = vm => vm.VisitHostMemory((_, _) => { }),
    };

    [Theory]
    [MemberData(nameof(Calls))]
    public void A_destroyed_vm_refuses_the_call(string call)
    {
        var pool = new NativePagePool();
        var vm = MappedVm(pool);
        CallsOn[call](vm);                  // works while the VM lives
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
        Assert.Throws<ObjectDisposedException>(() => CallsOn[call](vm));
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// Table pages come from slabs of 64 pool pages whose first page holds the headers, so a slab holds
    /// 63 tables (TdpPageAllocator). A slab that threaded a page too few on its free list, or one past its
    /// end, would still map correctly; only the pool's count shows it.
    /// </summary>
    [Fact]
    public void A_slab_of_64_pool_pages_holds_63_tables_and_the_64th_table_takes_a_new_slab()
    {
        var pool = new NativePagePool();
        using (var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, pool))
        {
            Assert.Equal(TdpStatus.Ok, vm.SetMaxPageSize(12));
            Assert.Equal(TdpStatus.Ok, vm.CreateSlot(0, 0, 64 * 512, 0x10_0000, 12, readOnly: false));
            long hostPages = pool.PagesInUse;
            // The root, one level-3 and one level-2 table, then a level-1 table per 2 MiB region touched.
            ulong region = 0;
            for (; vm.TablePages < 63; region++)
                Assert.Equal(TdpAccessStatus.Mapped, vm.Access(region << 21, AccessType.Read).Status);
            Assert.Equal(60UL, region);
            Assert.Equal(64, pool.PagesInUse - hostPages);
            Assert.Equal(TdpAccessStatus.Mapped, vm.Access(region << 21, AccessType.Read).Status);
            Assert.Equal(64, vm.TablePages);
            Assert.Equal(128, pool.PagesInUse - hostPages);
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Theory]
    [InlineData(TdpFormatKind.Ept)]
    [InlineData(TdpFormatKind.Stage2)]
    public void Table_entries_take_no_rights_away_and_the_check_sees_one_that_does(TdpFormatKind kind)
    {
        var format = kind == TdpFormatKind.Ept ? TdpFormat.Ept : TdpFormat.Stage2;
        using var vm = TdpVm.Create(kind, sharedBit: null, new NativePagePool());
        Assert.Equal(TdpStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 12, readOnly: false));
        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x20_1000, AccessType.Write).Status);
        var tables = new List<TdpEntryInfo>();
        vm.VisitPages((_, entries) => tables.AddRange(entries.Where(e => !e.IsLeaf)));
        Assert.Equal(3, tables.Count);                       // 4-level root, then levels 3 and 2 above the 4 KiB leaf
        Assert.All(tables, e => Assert.Null(ImplTdpEngine.TableEntryProblem(format, e.Raw)));

        // What the harness reports: an EPT table entry without W (or R, or X) or with the page-size
        // bit; a stage-2 table descriptor that is not 0b11 or has bits in 11:2.
        ulong table = 0x1234_5000;
        Assert.Null(ImplTdpEngine.TableEntryProblem(TdpFormat.Ept, table | 0x7 | 0x100));   // A bit allowed
        Assert.NotNull(ImplTdpEngine.TableEntryProblem(TdpFormat.Ept, table | 0x5));
        Assert.NotNull(ImplTdpEngine.TableEntryProblem(TdpFormat.Ept, table | 0x87));
        Assert.Null(ImplTdpEngine.TableEntryProblem(TdpFormat.Stage2, table | 0x3));
        Assert.NotNull(ImplTdpEngine.TableEntryProblem(TdpFormat.Stage2, table | 0x1));
        Assert.NotNull(ImplTdpEngine.TableEntryProblem(TdpFormat.Stage2, table | 0x83));
    }

    [Fact]
    public void Null_arguments_are_refused_and_destroying_twice_is_harmless()
    {
        Assert.Throws<ArgumentNullException>(() => TdpVm.Create(TdpFormatKind.Stage2, sharedBit: null, null!));
        var pool = new NativePagePool();
        var vm = MappedVm(pool);
        Assert.Throws<ArgumentNullException>(() => vm.VisitPages(null!));
        Assert.Throws<ArgumentNullException>(() => vm.VisitHostMemory(null!));
        Assert.Throws<ArgumentNullException>(() => vm.GetDirtyLog(0, null!));
        Assert.Single(vm.Slots);             // nothing changed by the refused calls
        vm.Dispose();
        vm.Dispose();
        Assert.Equal(0, pool.PagesInUse);
        Assert.Equal(pool.PagesAllocated, pool.PagesFreed);
    }
}
