namespace MmuSpec.Impl.Tdp;

/// <summary>
/// A present entry of a table page. A table entry has <see cref="IsLeaf"/> false and <see cref="Child"/>
/// set (the leaf fields are zero/false); a leaf has <see cref="Child"/> = default and maps
/// [LeafGfn, LeafGfn + 512^(LeafLevel-1)) to host frames from <see cref="HostPfn"/>. <see cref="Raw"/>
/// is the entry as stored (for checks of bits the decoded fields leave out, e.g. a table entry's rights).
/// </summary>
public readonly record struct TdpEntryInfo(
    int Index, bool IsLeaf, TdpPageKey Child, ulong LeafGfn, int LeafLevel, ulong HostPfn, bool Writable, ulong Raw)
{
    /// <summary>A leaf's accessed state, when the MMU tracks it (<see cref="TdpAccessedDirty"/>); else false.</summary>
    public bool Accessed { get; init; }

    /// <summary>A leaf's dirty state (EPT with A/D enabled); else false.</summary>
    public bool Dirty { get; init; }

    public override string ToString() => IsLeaf
        ? $"[{Index}] Leaf(gfn=0x{LeafGfn:X}, L{LeafLevel}, pfn=0x{HostPfn:X}, {(Writable ? "rw" : "ro")})"
        : $"[{Index}] Table{Child}";
}
