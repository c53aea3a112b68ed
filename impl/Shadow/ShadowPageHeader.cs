using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// What every shadow page (direct or indirect) carries: 24 bytes in its slab's header page
/// (<see cref="ShadowPageAllocator"/>), against ~184 for KVM's kvm_mmu_page.
/// <code>
/// Word:     63 in-use | 61 zapped | 60 unsync | 59..40 role word (20 bits) | 39..0 gfn
/// Parents:  pte_list head of the table entries linking this page (<see cref="PteListPool"/>)
/// HashNext: next page in this page's hash bucket (<see cref="ShadowPageHash"/>); once zapped, the next
///           page awaiting its free
/// </code>
/// Savings: gfns are below 2^(MAXPHYADDR-12) &lt;= 2^40 and the role is 20 bits, so the whole key plus the
/// flags is one word and a key comparison is one masked compare. Parents use KVM's "one inline, a list only
/// beyond that" encoding, so the common single parent costs no allocation. No spte pointer (the header's
/// slot in its slab gives the table page by arithmetic and back), no list links for an active-page list
/// (pages are enumerated by slab, only on cold paths), and nothing indirect-only: the per-entry
/// translations, unsync-children bitmap and write-flooding count live beside indirect pages only
/// (<see cref="IndirectExtra"/>), so a direct page pays 24 bytes in all.
/// </summary>
internal struct ShadowPageHeader
{
    public const int Bytes = 24;
    public const int GfnBits = 40;
    public const ulong GfnMask = (1UL << GfnBits) - 1;
    private const int RoleShift = GfnBits;
    private const ulong RoleMask = (1UL << 20) - 1;

    /// <summary>The bits that form the key (gfn and role).</summary>
    public const ulong KeyMask = (1UL << 60) - 1;
    private const ulong UnsyncBit = 1UL << 60;
    private const ulong ZappedBit = 1UL << 61;
    private const ulong InUseBit = 1UL << 63;

    public ulong Word;
    public ulong Parents;
    public nint HashNext;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PackKey(ulong gfn, ShadowRole role)
    {
        Debug.Assert(gfn <= GfnMask, "gfn beyond 40 bits");
        Debug.Assert(role.Word <= RoleMask, "role beyond 20 bits");
        return gfn | ((ulong)role.Word << RoleShift);
    }

    public void Init(ulong gfn, ShadowRole role)
    {
        Word = PackKey(gfn, role) | InUseBit;
        Parents = 0;
        HashNext = 0;
    }

    public readonly ulong Gfn => Word & GfnMask;

    public readonly ShadowRole Role => new((uint)((Word >> RoleShift) & RoleMask));

    public readonly bool Unsync => (Word & UnsyncBit) != 0;

    public readonly bool InUse => (Word & InUseBit) != 0;

    /// <summary>In use and not zapped: in the hash, reachable by the rules.</summary>
    public readonly bool Live => (Word & (InUseBit | ZappedBit)) == InUseBit;

    public void SetUnsync(bool unsync) => Word = unsync ? Word | UnsyncBit : Word & ~UnsyncBit;

    public void MarkZapped() => Word |= ZappedBit;
}

/// <summary>
/// The bookkeeping only an indirect page needs besides its per-entry translations: 72 bytes, next to the
/// headers in an indirect slab's header page, found by arithmetic from the spte page (no pointer in the
/// header, so direct pages do not pay for one). KVM keeps the same bitmap (unsync_child_bitmap) in every
/// kvm_mmu_page, 64 bytes per direct page for nothing.
/// </summary>
internal struct IndirectExtra
{
    public const int Bytes = 72;

    /// <summary>Bit i: entry i is a table entry whose subtree holds an unsync page (exact, not lazy).</summary>
    public UnsyncChildBits UnsyncChildren;
    public int UnsyncChildCount;
    public int WriteFlooding;
}

[InlineArray(Words)]
internal struct UnsyncChildBits
{
    public const int Words = ShadowPage.Entries / 64;

    private ulong _element0;
}
