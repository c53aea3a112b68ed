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
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 21, readOnly: false));
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
        ["PreFault"] = vm => vm.PreFault(0x20_0000, 0x2000),
        ["ZapAll"] = vm => vm.ZapAll(),
        ["Age"] = vm => vm.Age(0x200, 0x201, out _),
        ["TestAge"] = vm => vm.TestAge(0x200, 0x201, out _),
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

    static readonly Dictionary<string, (int? SharedBit, Func<ITdpVm, object> Call, string Reason)> BadInput = new()
    {
        ["unknown access type"] = (null, vm => vm.Access(0x20_1000, (AccessType)7), "unknown access type 7"),
        ["gpa beyond the width"] = (null, vm => vm.Access(1UL << 48, AccessType.Read), "gpa 0x1000000000000 is not below 2^48"),
        ["fetch beyond the width"] = (null, vm => vm.Access(1UL << 48, AccessType.Fetch), "gpa 0x1000000000000 is not below 2^48"),
        ["slot beyond the gfn space"] = (null, vm => vm.CreateSlot(1, (1UL << 36) - 1, 2, 0x9000, 12, readOnly: false),
            "range [0xFFFFFFFFF, +0x2) is beyond 2^36 frames"),
        ["slot reaching the shared bit"] = (47, vm => vm.CreateSlot(1, (1UL << 35) - 1, 2, 0x9000, 12, readOnly: false),
            "range [0x7FFFFFFFF, +0x2) reaches the shared bit (gfn 0x800000000)"),
        ["overlapping slot"] = (null, vm => vm.CreateSlot(1, 0x3FF, 2, 0x9000, 12, readOnly: false), "range [0x3FF, 0x401) overlaps slot 0"),
        ["slot moved onto another"] = (null, vm =>
        {
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x1000, 0x10, 0x9000, 12, readOnly: false));
            return vm.MoveSlot(1, 0x300);
        }, "range [0x300, 0x310) overlaps slot 0"),
        ["slot id past the table"] = (null, vm => vm.DeleteSlot(32), "no slot 32"),
        ["slot created past the table"] = (null, vm => vm.CreateSlot(32, 0x1000, 1, 0x9000, 12, readOnly: false), "slot id 32 is outside 0..31"),
        ["host frames from 2^40"] = (null, vm => vm.CreateSlot(1, 0x1000, 1, 1UL << 40, 12, readOnly: false),
            "host frame base 0x10000000000 is not below 2^40"),
        ["store of 2 bytes"] = (null, vm => vm.GuestStore(0x20_1000, 1, 2), "store size 2 is not 4 or 8"),
        ["misaligned store"] = (null, vm => vm.GuestStore(0x20_1004, 1, 8), "gpa 0x201004 is not aligned to the 8-byte store"),
        ["negative slot id"] = (null, vm => vm.DeleteSlot(-1), "no slot -1"),
        ["empty pre-fault"] = (null, vm => vm.PreFault(0x20_0000, 0), "pre-fault range [0x200000, +0x0) is empty, not page aligned or wraps"),
        ["unaligned pre-fault"] = (null, vm => vm.PreFault(0x20_0800, 0x1000), "pre-fault range [0x200800, +0x1000) is empty, not page aligned or wraps"),
        ["unaligned pre-fault size"] = (null, vm => vm.PreFault(0x20_0000, 0x1800), "pre-fault range [0x200000, +0x1800) is empty, not page aligned or wraps"),
        ["wrapping pre-fault"] = (null, vm => vm.PreFault(0xFFFF_FFFF_FFFF_F000, 0x2000),
            "pre-fault range [0xFFFFFFFFFFFFF000, +0x2000) is empty, not page aligned or wraps"),
    };

    public static TheoryData<string> BadInputs() => [.. BadInput.Keys];

    /// <summary>
    /// Input the generators never make is refused with a reason naming what is wrong, and changes
    /// nothing (the slots and the tables read back the same).
    /// </summary>
    [Theory]
    [MemberData(nameof(BadInputs))]
    public void Bad_input_is_rejected_with_its_reason_and_changes_nothing(string input)
    {
        var (sharedBit, call, reason) = BadInput[input];
        var pool = new NativePagePool();
        using (var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit, pool))
        {
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 21, readOnly: false));
            Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x20_1000, AccessType.Write).Status);
            string Tables()
            {
                var text = new List<string>();
                vm.VisitPages((key, entries) => text.Add($"{key}: {string.Join(" ", entries)}"));
                return string.Join("\n", text);
            }
            string tables = Tables();
            object result = call(vm);
            Assert.Contains("Rejected", result.ToString());
            Assert.Equal(reason, vm.LastRejection);
            Assert.Equal(tables, Tables());
            Assert.Contains(vm.Slots, s => s.Id == 0 && s.BaseGfn == 0x200 && s.Pages == 0x200);
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    /// <summary>
    /// The flush log keeps up to 16 ranges; a 17th that merges with none turns it into a flush of
    /// everything (always correct), and the 18th adds nothing after that. Zapping leaves two gfns apart
    /// records one range per leaf.
    /// </summary>
    [Fact]
    public void More_than_16_separate_flushes_overflow_the_log_into_a_flush_of_everything()
    {
        using var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, new NativePagePool());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 12, readOnly: false));
        TdpFlushLog none = vm.TakeFlushes();
        Assert.True(none.IsEmpty);
        Assert.Throws<ArgumentOutOfRangeException>(() => none[0]);

        foreach (int leaves in new[] { 16, 18 })
        {
            for (int k = 0; k < leaves; k++)
                Assert.Equal(TdpAccessStatus.Mapped, vm.Access((0x200UL + 2 * (ulong)k) << 12, AccessType.Read).Status);
            vm.TakeFlushes();
            Assert.Equal(TdpStatus.Ok, vm.ZapRange(0x200, 0x400));
            TdpFlushLog log = vm.TakeFlushes();
            Assert.False(log.IsEmpty);
            if (leaves == 16)
            {
                Assert.False(log.FlushedAll);
                Assert.Equal(16, log.Count);
                for (int k = 0; k < 16; k++)
                    Assert.Equal(new TdpFlushRange(0x200 + 2 * (ulong)k, 1), log[k]);
                Assert.Throws<ArgumentOutOfRangeException>(() => log[16]);
            }
            else
            {
                Assert.True(log.FlushedAll);
                Assert.Equal(0, log.Count);
                Assert.Throws<ArgumentOutOfRangeException>(() => log[0]);
            }
        }
    }

    static PagingControls Guest(PagingMode mode) => new(mode, Cr0Wp: true, Cr4Pse: false, Cr4Smep: false,
        Cr4Smap: false, Cr4Pke: false, EferNxe: false, EflagsAc: false, Pkru: 0, MaxPhyAddr: 46);

    /// <summary>
    /// The PDPTE registers read back as the guest's in PAE paging and as 0 with paging off or in
    /// another mode; register indexes are 0..3. In 32-bit paging the last linear
    /// address, 0xFFFFFFFF, walks and 2^32 is refused.
    /// </summary>
    [Fact]
    public void Guest_registers_and_linear_addresses_keep_their_modes_bounds()
    {
        using var vm = TdpVm.Create(TdpFormatKind.Ept, sharedBit: null, new NativePagePool());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 0x10, 0x1000, 12, readOnly: false));
        Assert.Equal(0UL, vm.GuestPdpte(3));                                        // paging off
        Assert.Equal(TdpAccessStatus.Mapped, vm.GuestStore(0xFE0 + 3 * 8, 0x5001, 8).Status);
        Assert.Equal(TdpGuestStatus.Ok, vm.GuestSetPaging(Guest(PagingMode.Pae), 0xFE0).Status);
        Assert.Equal(0x5001UL, vm.GuestPdpte(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => vm.GuestPdpte(4));
        Assert.Throws<ArgumentOutOfRangeException>(() => vm.GuestPdpte(-1));

        Assert.Equal(TdpGuestStatus.Ok, vm.GuestSetPaging(Guest(PagingMode.Bits32), 0xFE0 & ~0xFFFUL).Status);
        Assert.Equal(0UL, vm.GuestPdpte(3));                                        // 32-bit paging has none
        TdpGuestOutcome last = vm.GuestAccess(0xFFFF_FFFF, AccessType.Read, Privilege.Supervisor);
        Assert.Equal(TdpGuestStatus.GuestFault, last.Status);                       // walked: not present
        Assert.Equal(WalkStatus.PageFault, last.Fault.Status);
        Assert.Equal(TdpGuestStatus.Rejected, vm.GuestAccess(0x1_0000_0000, AccessType.Read, Privilege.Supervisor).Status);
    }

    [Theory]
    [InlineData(TdpFormatKind.Ept)]
    [InlineData(TdpFormatKind.Stage2)]
    public void A_vm_reports_the_format_it_was_made_with_and_needs_a_pool(TdpFormatKind kind)
    {
        using var vm = TdpVm.Create(kind, sharedBit: null, new NativePagePool());
        Assert.Equal(kind, vm.Format);
        Assert.Throws<ArgumentNullException>(() => TdpVm.Create(kind, sharedBit: null, null!));
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
            Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0, 64 * 512, 0x10_0000, 12, readOnly: false));
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
    public void Leaves_carry_the_format_bits_of_their_level_and_the_check_sees_one_that_does_not(TdpFormatKind kind)
    {
        var format = kind == TdpFormatKind.Ept ? TdpFormat.Ept : TdpFormat.Stage2;
        using var vm = TdpVm.Create(kind, sharedBit: null, new NativePagePool());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 21, readOnly: false));
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(1, 0x1000, 0x10, 0x9000, 12, readOnly: true));
        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x20_1000, AccessType.Write).Status);   // a 2 MiB leaf
        Assert.Equal(TdpAccessStatus.Mapped, vm.Access(0x100_3000, AccessType.Read).Status);   // a 4 KiB read-only leaf
        var leaves = new List<TdpEntryInfo>();
        vm.VisitPages((_, entries) => leaves.AddRange(entries.Where(e => e.IsLeaf)));
        Assert.Equal([1, 2], leaves.Select(e => e.LeafLevel).Order());
        Assert.All(leaves, e => Assert.Null(ImplTdpEngine.LeafEntryProblem(format, e.Raw, e.LeafLevel)));

        ulong frame = 0x1234_5000;
        const ulong Wb = 6 << 3;
        const ulong EptSw = 3UL << 57, S2Sw = 3UL << 55; // host- and MMU-writable, which a writable leaf needs
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, frame | 0x7 | Wb | EptSw, 1));
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, frame | 0x5 | Wb | 0x80, 2));
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, frame | 0x7 | Wb | 0x80, 1));  // bit 7 in a 4 KiB leaf
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, frame | 0x7 | Wb, 3));         // a 1 GiB leaf without it
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Ept, frame | 0x3 | Wb, 1));         // no execute
        const ulong S2Leaf = 0x40 | 0x400 | (0xF << 2);
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x3 | S2Leaf, 1));
        Assert.Null(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x1 | S2Leaf | 0x80 | S2Sw, 2));
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x1 | S2Leaf, 1));  // 0b01 at level 3: reserved
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x3 | S2Leaf, 2));  // a table descriptor, not a block
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x3 | 0x400, 1));   // no S2AP read
        Assert.NotNull(ImplTdpEngine.LeafEntryProblem(TdpFormat.Stage2, frame | 0x3 | 0x40, 1));    // no access flag
    }

    [Theory]
    [InlineData(TdpFormatKind.Ept)]
    [InlineData(TdpFormatKind.Stage2)]
    public void Table_entries_take_no_rights_away_and_the_check_sees_one_that_does(TdpFormatKind kind)
    {
        var format = kind == TdpFormatKind.Ept ? TdpFormat.Ept : TdpFormat.Stage2;
        using var vm = TdpVm.Create(kind, sharedBit: null, new NativePagePool());
        Assert.Equal(SlotStatus.Ok, vm.CreateSlot(0, 0x200, 0x200, 0x1200, 12, readOnly: false));
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
