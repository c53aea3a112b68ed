using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// What happens to a previous root whose translations may be stale after a flush (docs/shadow-model.md,
/// "Flush PCID p", "Flush all PCIDs"): keep-and-resync, the keep-unsync-prev-roots proposal (Lai Jiangshan,
/// 2021; docs/glossary.md: flag it unsync, re-sync it when it is switched back in), or KVM today (free it;
/// a flush of all PCIDs syncs it).
/// </summary>
public enum ShadowRootPolicy : byte
{
    KeepAndResync,
    Upstream,
}

/// <summary>A cached root as the tests see it. Pages: 1 key (4/5-level) or 4 (PAE/32-bit; null = none).</summary>
public readonly record struct ShadowRootView(ulong Pgd, ShadowRole Role, IReadOnlyList<ShadowPageKey?> Pages, bool Unsync);

/// <summary>
/// Counters since creation, for benchmarks: <see cref="Builds"/> = roots loaded anew (misses, reloads after a
/// free), <see cref="CachedSwitches"/> = MOV CR3s served by a previous root, <see cref="Resyncs"/> =
/// unsync-flagged roots synced on reuse, <see cref="Freed"/> = roots freed (any reason),
/// <see cref="PagesCreated"/> = shadow pages created.
/// </summary>
public readonly record struct ShadowRootStats(long Builds, long CachedSwitches, long Resyncs, long Freed, long PagesCreated);

/// <summary>
/// One cached root (KVM's kvm_mmu_root_info: pgd and root hpa), 16 bytes.
/// <code>
/// Pgd:  63 unsync | 62..0 the CR3 value the root was built for (PCID bits included)
/// Root: 0 = none; a 4/5-level root's ShadowPage address (4 KiB aligned, bit 0 clear);
///       a PAE/32-bit root's <see cref="PaeRoot"/> block address | 1
/// </code>
/// The unsync flag costs no memory: bit 63 of a CR3 operand is MOV CR3's NOFLUSH, stripped before the value
/// reaches CR3, and bits at and above MAXPHYADDR (<= 52) are reserved in CR3 (a 32-bit/PAE CR3 is below
/// 2^32), so a real pgd always has bit 63 clear. Which kind of root pointer it is costs no memory either: a
/// shadow page's table is 4 KiB aligned and a block 64-byte aligned, so bit 0 of the pointer is free to say.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RootInfo
{
    public const ulong UnsyncBit = 1UL << 63;
    public const nint PaeTag = 1;

    public ulong Pgd;
    public nint Root;

    public readonly bool IsNone => Root == 0;

    /// <summary>The CR3 value the root was built for, without the unsync flag.</summary>
    public readonly ulong Cr3 => Pgd & ~UnsyncBit;

    public readonly bool Unsync => (Pgd & UnsyncBit) != 0;

    public readonly bool IsPae => (Root & PaeTag) != 0;

    /// <summary>A 4/5-level root's page.</summary>
    public readonly ShadowPage Page
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(Root != 0 && !IsPae, "not a 4/5-level root");
            return ShadowPage.FromAddress(Root);
        }
    }

    /// <summary>A PAE/32-bit root's block.</summary>
    public readonly unsafe ref PaeRoot Block
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Debug.Assert(IsPae, "not a PAE/32-bit root");
            Debug.Assert((Root & ~PaeTag & (PaeRoot.Bytes - 1)) == 0, "a PAE root block is 64-byte aligned");
            return ref *(PaeRoot*)(Root & ~PaeTag);
        }
    }
}

/// <summary>
/// A PAE or 32-bit guest's root (KVM's pae_root, not a shadow page itself): the four level-2 pages, one per
/// gva bits 31:30 (0 = none: a not-present PDPTE), and the root's role (a PAE root may have no page to read
/// it from). 64 bytes, one cache line; <see cref="ShadowMmu"/> keeps <see cref="PaeRoot.Count"/> of them in
/// a page allocated at creation, so switching roots never allocates.
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = Bytes)]
internal struct PaeRoot
{
    public const int Bytes = 64;
    public const int Entries = 4;

    /// <summary>Blocks per vCPU: the current root and the three previous ones can all be PAE/32-bit roots.</summary>
    public const int Count = 4;

    public PaeEntries Pages;
    public uint RoleWord;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly ShadowPage Entry(int i) => ShadowPage.FromAddress(Pages[i]);
}

/// <summary>
/// The native page holding one MMU's <see cref="PaeRoot.Count"/> PAE root blocks, and the tagged root
/// pointers (<see cref="RootInfo"/>) that name them: the only place a block's address is computed.
/// </summary>
internal readonly unsafe struct PaeRootPage
{
    private readonly PaeRoot* _blocks;

    private PaeRootPage(PaeRoot* blocks) => _blocks = blocks;

    public static PaeRootPage Allocate(NativePagePool pool)
    {
        Debug.Assert(sizeof(PaeRoot) == PaeRoot.Bytes && PaeRoot.Count * PaeRoot.Bytes <= ShadowPageAllocator.PageBytes, "PAE root blocks overflow their page");
        return new((PaeRoot*)pool.AllocatePages(1));
    }

    public void Free(NativePagePool pool) => pool.FreePages((byte*)_blocks, 1);

    /// <summary>Block <paramref name="i"/>, cleared, as a tagged root pointer.</summary>
    public nint Clear(int i)
    {
        Debug.Assert((uint)i < PaeRoot.Count, "a block index outside the page");
        PaeRoot* block = _blocks + i;
        *block = default;
        Debug.Assert(((nint)block & RootInfo.PaeTag) == 0, "a block address has bit 0 clear");
        return (nint)block | RootInfo.PaeTag;
    }

    /// <summary>The block a tagged root pointer names, which must be one of this page's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref PaeRoot At(nint root)
    {
        Debug.Assert(IndexOf(root) >= 0, "a PAE root pointer outside this MMU's blocks");
        return ref *(PaeRoot*)(root & ~RootInfo.PaeTag);
    }

    /// <summary>Which block of this page a tagged root pointer names.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int IndexOf(nint root)
    {
        Debug.Assert((root & RootInfo.PaeTag) != 0, "not a PAE root pointer");
        long i = (PaeRoot*)(root & ~RootInfo.PaeTag) - _blocks;
        Debug.Assert((ulong)i < PaeRoot.Count && (root & ~RootInfo.PaeTag) == (nint)(_blocks + i), "a PAE root pointer outside this MMU's blocks");
        return (int)i;
    }
}

[InlineArray(PaeRoot.Entries)]
internal struct PaeEntries
{
    private nint _element0;
}

/// <summary>The three previous roots, most recently used first (KVM's prev_roots).</summary>
[InlineArray(Capacity)]
internal struct PreviousRootArray
{
    public const int Capacity = 3;

    private RootInfo _element0;
}
