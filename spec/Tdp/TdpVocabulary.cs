using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Tdp;

/// <summary>The table format of the MMU's own page tables. The abstract model does not depend on it.</summary>
public enum TdpFormat
{
    /// <summary>x86 EPT.</summary>
    Ept,
    /// <summary>Arm64 stage-2 translation tables, 4 KiB granule.</summary>
    Stage2,
}

/// <summary>
/// A VM's fixed configuration (docs/tdp-model.md): the table format and the optional TDX-style
/// shared GPA bit (47 or 51). A 52-bit guest-physical space (shared bit 51) needs 5 levels.
/// </summary>
public sealed record VmConfig
{
    public VmConfig(TdpFormat format, int? sharedBit = null, AccessedDirty accessedDirty = AccessedDirty.Untracked)
    {
        if (!Enum.IsDefined(format)) throw new ArgumentOutOfRangeException(nameof(format), format, "unknown TDP format");
        if (sharedBit is not (null or 47 or 51))
            throw new ArgumentOutOfRangeException(nameof(sharedBit), sharedBit, "the shared bit is 47 or 51 (or none)");
        if (!Enum.IsDefined(accessedDirty)) throw new ArgumentOutOfRangeException(nameof(accessedDirty), accessedDirty, "unknown accessed/dirty mode");
        Format = format; SharedBit = sharedBit; AccessedDirty = accessedDirty;
    }

    public TdpFormat Format { get; }
    public int? SharedBit { get; }

    /// <summary>Whether leaves carry accessed/dirty state and aging runs (docs/tdp-model.md, "Aging"); untracked by default.</summary>
    public AccessedDirty AccessedDirty { get; }

    public int RootLevel => SharedBit == 51 ? 5 : 4;
    public int GpaBits => RootLevel == 5 ? 52 : 48;
    public ulong GfnLimit => 1UL << (GpaBits - 12);

    /// <summary>
    /// Host frames the format's leaves can hold: EPT entries keep address bits 51:12 (2^40 frames),
    /// stage-2 entries with a 48-bit output address bits 47:12 (2^36 frames).
    /// </summary>
    public ulong HostPfnLimit => Format == TdpFormat.Stage2 ? 1UL << 36 : 1UL << 40;

    /// <summary>The shared bit as a gfn bit (0 without one): what a fault strips and the direct root adds back.</summary>
    public ulong DirectBits => SharedBit is { } s ? 1UL << (s - 12) : 0;

    public VmConfig WithFormat(TdpFormat value) => new(value, SharedBit, AccessedDirty);
    public VmConfig WithSharedBit(int? value) => new(Format, value, AccessedDirty);
    public VmConfig WithAccessedDirty(AccessedDirty value) => new(Format, SharedBit, value);

    public override string ToString() => $"{Format}" + (SharedBit is { } s ? $" shared bit {s}" : "") 
        + (AccessedDirty == AccessedDirty.Untracked ? "" : $", A/D {AccessedDirty.ToString().ToLowerInvariant()}");
}

/// <summary>
/// The role of a TDP table page: its level and whether it belongs to the mirror (private) root.
/// (The shadow MMU's role has many more fields; a TDP page is always direct.)
/// </summary>
public sealed record MmuRole(int Level, bool Mirror)
{
    public override string ToString() => $"L{Level}{(Mirror ? " mirror" : "")}";
}

/// <summary>A table page's identity: the first gfn it covers (shared bit removed) and its role.</summary>
public sealed record PageKey(ulong Gfn, MmuRole Role) : IComparable<PageKey>
{
    public int CompareTo(PageKey? other)
    {
        if (other is null) return 1;
        int c = Role.Mirror.CompareTo(other.Role.Mirror);
        if (c != 0) return c;
        c = other.Role.Level.CompareTo(Role.Level);      // roots first
        return c != 0 ? c : Gfn.CompareTo(other.Gfn);
    }

    public override string ToString() => $"({Bits.Hex(Gfn)}, {Role})";
}

/// <summary>A present entry of a table page: a link to a child table, or a leaf mapping.</summary>
public abstract record Spte
{
    private Spte() { }

    public sealed record Table(PageKey Child) : Spte
    {
        public override string ToString() => $"table {Child}";
    }

    /// <summary>
    /// A leaf: it maps the 2^(9*(Level-1)) frames from <paramref name="Gfn"/> to host frames from
    /// <paramref name="HostPfn"/>; always readable and executable. The gfn is stored, not computed
    /// (as KVM did before the computed-direct-gfn patch, Lai Jiangshan, 2010), so the impl's direct-page
    /// formula is checked against it.
    /// </summary>
    public sealed record Leaf(ulong Gfn, int Level, ulong HostPfn, bool Writable) : Spte
    {
        public ulong Frames => 1UL << (9 * (Level - 1));
        public bool Covers(ulong gfn) => gfn >= Gfn && gfn - Gfn < Frames;
        public bool Overlaps(ulong start, ulong end) => start < Gfn + Frames && Gfn < end;
        public PageSize Size => PagingLevels.PageSizeAt(PagingMode.Long4, Level);
        public Leaf WithWritable(bool value) => this with { Writable = value };

        /// <summary>Accessed (young): EPT A, stage-2 AF; always false while the VM leaves A/D untracked (docs/tdp-model.md, "Aging").</summary>
        public bool Accessed { get; init; }

        /// <summary>Dirty: EPT D with A/D enabled; always false otherwise.</summary>
        public bool Dirty { get; init; }

        public override string ToString() =>
            $"leaf {Size.Name()} gfn {Bits.Hex(Gfn)} -> pfn {Bits.Hex(HostPfn)} {(Writable ? "RWX" : "R-X")}{(Accessed ? " A" : "")}{(Dirty ? " D" : "")}";
    }
}

/// <summary>A table page: its key and its present entries by index.</summary>
public sealed record TablePage(PageKey Key, ImmutableSortedDictionary<int, Spte> Entries)
{
    public static TablePage Empty(PageKey key) => new(key, ImmutableSortedDictionary<int, Spte>.Empty);

    public TablePage With(int index, Spte entry) => this with { Entries = Entries.SetItem(index, entry) };
    public TablePage Without(int index) => this with { Entries = Entries.Remove(index) };

    public bool Equals(TablePage? other) => other is not null && Key.Equals(other.Key) && Entries.SameEntries(other.Entries);
    public override int GetHashCode() => HashCode.Combine(Key, Entries.Count);

    public override string ToString() =>
        $"page {Key}: " + (Entries.Count == 0 ? "empty" : string.Join("; ", Entries.Select(e => $"[{e.Key}] {e.Value}")));
}
