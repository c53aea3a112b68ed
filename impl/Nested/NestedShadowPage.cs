using System.Diagnostics;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// The role of a shadow EPT page (KVM's kvm_mmu_page_role as a nested EPT MMU sets it): its level; direct (it
/// splits one of L1's large EPT mappings, gfn computed) or indirect (it shadows one of L1's EPT tables); guest_mode
/// (always: only L2 runs on these pages); EPT A/D on (the EPTP's bit 6, KVM's ad_disabled inverted); execute-only
/// offered; and the access (R/W/X) ANDed over L1's entries above (indirect) or over the whole walk with a clean
/// leaf's W removed (direct), so a page shared by two paths never grants one path the other's rights.
/// </summary>
internal readonly record struct NestedRole(uint Bits)
{
    private const int LevelShift = 0, DirectBit = 3, GuestModeBit = 4, AccessedDirtyBit = 5, ExecuteOnlyBit = 6, AccessShift = 7;

    public static NestedRole Create(int level, bool direct, bool accessedDirty, bool executeOnly, uint access) =>
        new(((uint)level << LevelShift) | (direct ? 1u << DirectBit : 0) | (1u << GuestModeBit)
            | (accessedDirty ? 1u << AccessedDirtyBit : 0) | (executeOnly ? 1u << ExecuteOnlyBit : 0) | ((access & 7) << AccessShift));

    public int Level => (int)((Bits >> LevelShift) & 7);
    public bool Direct => (Bits & (1u << DirectBit)) != 0;
    public bool GuestMode => (Bits & (1u << GuestModeBit)) != 0;
    public bool AccessedDirty => (Bits & (1u << AccessedDirtyBit)) != 0;
    public bool ExecuteOnly => (Bits & (1u << ExecuteOnlyBit)) != 0;
    public uint Access => (Bits >> AccessShift) & 7;

    public override string ToString() =>
        $"level {Level}{(Direct ? " direct" : "")}{(GuestMode ? " guest" : "")}{(AccessedDirty ? " ad" : "")}{(ExecuteOnly ? " xo" : "")} access {Access}";
}

/// <summary>
/// One shadow EPT page: a 4 KiB native table of 512 entries in L0's EPT format (bits 2:0 R/W/X; a non-leaf entry
/// holds its child's table address, a leaf the host frame), its key, its children by index (managed, so a zap can
/// unlink them) and its parent entries. Freed by <see cref="Free"/> only.
/// </summary>
internal sealed unsafe class NestedShadowPage
{
    public const int Entries = 512;

    private NativePagePool? _pool;
    private ulong* _table;

    public NestedShadowPage(NativePagePool pool, ulong gfn, NestedRole role)
    {
        _pool = pool;
        _table = (ulong*)pool.AllocatePages(1);
        Gfn = gfn;
        Role = role;
        if (role.Level > 1)
            Children = new NestedShadowPage?[Entries];
    }

    /// <summary>The L1 gfn of the EPT table shadowed (indirect) or the first L1 gfn mapped (direct).</summary>
    public ulong Gfn { get; }

    public NestedRole Role { get; }

    /// <summary>Child pages by entry index (levels above 1 only).</summary>
    public NestedShadowPage?[]? Children { get; }

    /// <summary>The entries that link this page: (parent, index).</summary>
    public List<(NestedShadowPage Page, int Index)> Parents { get; } = new();

    /// <summary>An unsync last-level page: L1 stores into its table land without a trap; its entries may be stale until synced (NestedEptMmu.Unsync.cs).</summary>
    public bool Unsync { get; set; }

    /// <summary>Cached roots (current and previous) that point at this page.</summary>
    public int RootCount { get; set; }

    /// <summary>L1 stores into this page's table since a fault last went through it (KVM's write_flooding_count; NestedEptMmu.Flood.cs).</summary>
    public int WriteFlooding { get; set; }

    /// <summary>Its neighbours in the MMU's pages by age (KVM's active_mmu_pages link, intrusive: no node per page; NestedEptMmu.Recycle.cs).</summary>
    public NestedShadowPage? Older { get; set; }
    public NestedShadowPage? Newer { get; set; }

    public bool Live => _table != null;

    /// <summary>The table's address, as a parent entry holds it.</summary>
    public ulong TableAddress => (ulong)_table;

    public ref ulong Entry(int index)
    {
        Debug.Assert(_table != null && (uint)index < Entries, "entry of a freed page or outside the table");
        return ref _table[index];
    }

    public int PresentEntries()
    {
        int n = 0;
        for (int i = 0; i < Entries; i++)
            if ((_table[i] & NestedSpte.PermissionMask) != 0)
                n++;
        return n;
    }

    public void Free()
    {
        Debug.Assert(_table != null, "double free of a shadow EPT page");
        _pool!.FreePages((byte*)_table, 1);
        _table = null;
        _pool = null;
    }

    public override string ToString() => $"shadow EPT page gfn 0x{Gfn:X} ({Role})";
}

/// <summary>L0's EPT entry for L2 (the shadow entry): R/W/X in bits 2:0, write-back memory type in a leaf, the address in 51:12.</summary>
internal static class NestedSpte
{
    public const ulong PermissionMask = 7;
    public const ulong Read = 1, Write = 2, Execute = 4;
    public const ulong AddressMask = 0x000F_FFFF_FFFF_F000;

    /// <summary>A leaf's memory type (bits 5:3): write-back, as KVM sets for RAM.</summary>
    public const ulong WriteBackLeaf = 6UL << 3;

    /// <summary>A non-leaf entry grants everything: the leaf carries the rights ANDed over L1's walk (KVM's shadow non-leaf entries).</summary>
    public static ulong Link(NestedShadowPage child) => child.TableAddress | PermissionMask;

    public static ulong Leaf(ulong hostPfn, uint access) => (hostPfn << 12) | WriteBackLeaf | (access & PermissionMask);
}
