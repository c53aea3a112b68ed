using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// A shadow page, named by the address of its 4 KiB spte table (a native page from a slab). A pointer-sized
/// value: the header, the indirect-only data and the entries are all found from the address by arithmetic
/// (<see cref="ShadowPageAllocator"/>). The rest of the shadow MMU handles pages only through this type and
/// <see cref="SpteRef"/>, so raw pointers stay in the handful of types that allocate and lay out memory.
/// </summary>
internal readonly unsafe struct ShadowPage : IEquatable<ShadowPage>
{
    public const int Entries = 512;

    private readonly ulong* _sptes;

    public ShadowPage(ulong* sptes)
    {
        Debug.Assert(((nuint)sptes & (ShadowPageAllocator.PageBytes - 1)) == 0, "a shadow page's table is page aligned");
        _sptes = sptes;
    }

    public static ShadowPage FromAddress(nint address) => new((ulong*)address);

    public nint Address => (nint)_sptes;

    public bool IsNull => _sptes == null;

    public ref ShadowPageHeader Header
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref ShadowPageAllocator.HeaderOf(_sptes);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong Spte(int index)
    {
        Debug.Assert(_sptes != null && (uint)index < Entries, "spte index out of range");
        return ref _sptes[index];
    }

    public SpteRef EntryRef(int index)
    {
        Debug.Assert(_sptes != null && (uint)index < Entries, "spte index out of range");
        return new SpteRef(_sptes + index);
    }

    /// <summary>
    /// Indirect pages: the translation recorded for entry <paramref name="index"/> (gfn &lt;&lt; 12 | ACC bits,
    /// KVM's shadowed_translation). The gfn is what the rules read; the ACC bits are kept for the layout's
    /// sake (KVM reads them in sync_spte) but nothing reads them here: the leaf spte holds the rights.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref ulong Translation(int index)
    {
        Debug.Assert(!Header.Role.Direct && (uint)index < Entries, "only indirect pages record translations");
        return ref ShadowPageAllocator.TranslationsOf(_sptes)[index];
    }

    /// <summary>Indirect pages: the unsync-children bitmap and write-flooding count.</summary>
    public ref IndirectExtra Extra
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(!Header.Role.Direct, "only indirect pages have the indirect data");
            return ref ShadowPageAllocator.ExtraOf(_sptes);
        }
    }

    public ulong Gfn => Header.Gfn;

    public ShadowRole Role => Header.Role;

    public int Level => Header.Role.Level;

    public bool Direct => Header.Role.Direct;

    public bool Unsync => Header.Unsync;

    public bool Live => Header.Live;

    public ShadowPageKey Key => new(Header.Gfn, Header.Role);

    public ShadowPage HashNext => FromAddress(Header.HashNext);

    public bool Equals(ShadowPage other) => _sptes == other._sptes;

    public override bool Equals(object? obj) => obj is ShadowPage other && Equals(other);

    public override int GetHashCode() => ((nint)_sptes).GetHashCode();

    public static bool operator ==(ShadowPage a, ShadowPage b) => a._sptes == b._sptes;

    public static bool operator !=(ShadowPage a, ShadowPage b) => a._sptes != b._sptes;

    public override string ToString() => IsNull ? "(none)" : Key.ToString();
}

/// <summary>
/// One spte, by address: what reverse maps and parent lists hold (8 bytes, like KVM's u64 *sptep). The
/// page and index come back by masking the address: the table is page aligned and entries are 8 bytes.
/// </summary>
internal readonly unsafe struct SpteRef
{
    private readonly ulong* _spte;

    public SpteRef(ulong* spte)
    {
        Debug.Assert(spte != null && ((nuint)spte & 7) == 0, "an spte reference is an aligned entry address");
        _spte = spte;
    }

    public static SpteRef FromAddress(nint address) => new((ulong*)address);

    public nint Address => (nint)_spte;

    public ref ulong Value
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref *_spte;
    }

    public ShadowPage Page => new((ulong*)((nuint)_spte & ~(nuint)(ShadowPageAllocator.PageBytes - 1)));

    public int Index => (int)(((nuint)_spte & (ShadowPageAllocator.PageBytes - 1)) >> 3);
}
