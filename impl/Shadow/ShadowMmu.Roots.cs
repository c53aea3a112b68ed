using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// The cached roots (KVM's mmu->root and mmu->prev_roots): docs/shadow-model.md, "The cached roots", "Free a
/// root", "Sync a root", "Load the root", "Invalidate gva in root R", "Flush PCID p", "Flush all PCIDs" and
/// <c>GuestMovCr3</c>'s switch. The current root and three previous ones are 16-byte <see cref="RootInfo"/>s
/// held inline in the MMU object (no array, no indirection); PAE/32-bit roots point at one of
/// <see cref="PaeRoot.Count"/> blocks in a native page allocated at creation.
/// <para>
/// Every cached root was built under the current controls: <c>GuestSetPaging</c> frees them all and a MOV CR3
/// never changes the controls. So they all share <see cref="_rootRole"/>, and <see cref="SyncEntry"/>'s use of
/// the current controls is right for a previous root too. The role is still checked on a hit, as KVM's
/// is_root_usable does.
/// </para>
/// </summary>
internal sealed partial class ShadowMmu
{
    private const ulong PcidMask = 0xFFF;
    private const ulong NoFlushBit = 1UL << 63; // MOV CR3's operand bit 63 with CR4.PCIDE
    private const uint AllBlocksFree = (1u << PaeRoot.Count) - 1;

    private readonly ShadowRootPolicy _rootPolicy;

    private RootInfo _current;
    private PreviousRootArray _previous;
    private int _previousCount;

    // The base role with the root level (4/5; 2 for PAE and 32-bit) under the current controls: the role every
    // cached root has. Set with the paging state.
    private ShadowRole _rootRole;
    private bool _pcide;

    // PaeRoot.Count blocks in one native page; bit i of _freeBlocks: block i is free. A bit mask instead of a
    // free list: a block costs no link, and the four-way choice is one TrailingZeroCount.
    private readonly PaeRootPage _blocks;
    private uint _freeBlocks = AllBlocksFree;

    private long _builds, _cachedSwitches, _resyncs, _freed, _pagesCreated;

    public ShadowRootPolicy RootPolicy => _rootPolicy;

    public bool GuestPcide => _pcide;

    public ShadowRootStats RootStats => new(_builds, _cachedSwitches, _resyncs, _freed, _pagesCreated);

    /// <summary>The current PCID (CR3 bits 11:0 with CR4.PCIDE, else 0).</summary>
    private ulong CurrentPcid => _pcide ? _guest!.Cr3 & PcidMask : 0;

    /// <summary>A root's PCID, computed from its pgd as the current one is from CR3 (KVM's kvm_get_pcid).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong PcidOf(in RootInfo root) => _pcide ? root.Pgd & PcidMask : 0;

    // ---- PAE blocks ----

    private void FreeBlockPage() => _blocks.Free(_pool);

    /// <summary>A cleared block, tagged as a root pointer.</summary>
    private nint AllocateBlock()
    {
        // At most four roots are cached and a block is taken only by a load, when there is no current root.
        if (_freeBlocks == 0)
            ThrowHelper.InvalidOperation("no free PAE root block: more than four PAE/32-bit roots cached");
        int i = BitOperations.TrailingZeroCount(_freeBlocks);
        _freeBlocks &= ~(1u << i);
        return _blocks.Clear(i);
    }

    /// <summary>The block a tagged root pointer names.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref PaeRoot BlockAt(nint root) => ref _blocks.At(root);

    private void ReleaseBlock(nint root)
    {
        int i = _blocks.IndexOf(root);
        Debug.Assert((_freeBlocks & (1u << i)) == 0, "releasing a block that is not in use");
        _freeBlocks |= 1u << i;
    }

    // ---- reading a root ----

    /// <summary>The root's role word: a 4/5-level root's from its page header (as KVM's is_root_usable), a PAE/32-bit root's from its block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint RoleWordOf(in RootInfo root) => root.IsPae ? root.Block.RoleWord : root.Page.Header.Role.Word;

    /// <summary>KVM's is_root_usable: a root built for this CR3 value under the current base role.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsRootUsable(in RootInfo root, ulong pgd) =>
        !root.IsNone && root.Cr3 == pgd && RoleWordOf(root) == _rootRole.Word;

    /// <summary>The root page of <paramref name="root"/> for <paramref name="gva"/> (PAE/32-bit: entry gva bits 31:30), or none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ShadowPage RootPageFor(in RootInfo root, ulong gva)
    {
        if (root.IsNone)
            return default;
        return root.IsPae ? root.Block.Entry((int)(gva >> PdpteRegisters.IndexShift) & PdpteRegisters.IndexMask) : root.Page;
    }

    /// <summary>The current root's page for <paramref name="gva"/>, or none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ShadowPage RootFor(ulong gva) => RootPageFor(_current, gva);

    private static bool RootHasPage(in RootInfo root, ShadowPage page)
    {
        if (root.IsNone)
            return false;
        if (!root.IsPae)
            return root.Root == page.Address;
        ref PaeRoot block = ref root.Block;
        for (int i = 0; i < PaeRoot.Entries; i++)
        {
            if (block.Pages[i] == page.Address)
                return true;
        }
        return false;
    }

    /// <summary>Whether <paramref name="page"/> is among the pages of a cached root (current or previous).</summary>
    private bool IsRootPage(ShadowPage page)
    {
        if (RootHasPage(_current, page))
            return true;
        for (int i = 0; i < _previousCount; i++)
        {
            if (RootHasPage(_previous[i], page))
                return true;
        }
        return false;
    }

    // ---- freeing ----

    /// <summary>Free a root's storage (its pages stay).</summary>
    private void ReleaseRoot(in RootInfo root)
    {
        Debug.Assert(!root.IsNone, "freeing no root");
        if (root.IsPae)
            ReleaseBlock(root.Root);
        _freed++;
    }

    private void FreeCurrentRoot()
    {
        ReleaseRoot(_current);
        _current = default;
    }

    /// <summary>Frees previous root <paramref name="i"/>; the later ones move up (no holes).</summary>
    private void FreePreviousRoot(int i)
    {
        Debug.Assert((uint)i < (uint)_previousCount, "no such previous root");
        ReleaseRoot(_previous[i]);
        RemovePrevious(i);
    }

    private void RemovePrevious(int i)
    {
        for (int j = i + 1; j < _previousCount; j++)
            _previous[j - 1] = _previous[j];
        _previous[--_previousCount] = default;
    }

    private void FreeAllRoots()
    {
        if (!_current.IsNone)
            FreeCurrentRoot();
        while (_previousCount > 0)
            FreePreviousRoot(_previousCount - 1);
        Debug.Assert(_freeBlocks == AllBlocksFree, "a PAE root block outlived every root");
    }

    /// <summary>Zap page's last step: every root (current or previous) with <paramref name="page"/> among its pages is freed.</summary>
    private void FreeRootsWithPage(ShadowPage page)
    {
        if (page.Direct || page.Level < 2)
            return; // root pages are indirect and at level 2 or above: the common zap of an unsync leaf table looks no further
        if (RootHasPage(_current, page))
            FreeCurrentRoot();
        for (int i = 0; i < _previousCount;)
        {
            if (RootHasPage(_previous[i], page))
                FreePreviousRoot(i);
            else
                i++;
        }
    }

    // ---- load, sync ----

    /// <summary>Load the root (KVM's mmu_alloc_shadow_roots, then kvm_mmu_sync_roots): only when there is no current root.</summary>
    private void LoadRoot()
    {
        Debug.Assert(_current.IsNone, "loading over a current root");
        GuestVcpu guest = _guest!;
        WalkContext ctx = guest.Context;
        ShadowRole role = _rootRole;
        Debug.Assert(role.Level == ctx.RootLevel, "the root role is not the current controls'");
        nint root;
        switch (guest.Controls.Mode)
        {
            case PagingMode.Long4:
            case PagingMode.Long5:
                root = GetPage(guest.RootTable >> PageShift, role).Address;
                break;
            case PagingMode.Pae:
            {
                root = AllocateBlock();
                ref PaeRoot block = ref BlockAt(root);
                block.RoleWord = role.Word;
                for (int i = 0; i < PaeRoot.Entries; i++)
                {
                    ulong pdpte = guest.Pdpte(i);
                    if ((pdpte & PagingEntryBits.Present) != 0)
                        block.Pages[i] = GetPage((pdpte & ctx.TableAddressMask) >> PageShift, role).Address;
                }
                break;
            }
            default:
            {
                root = AllocateBlock();
                ref PaeRoot block = ref BlockAt(root);
                block.RoleWord = role.Word;
                for (int i = 0; i < PaeRoot.Entries; i++)
                    block.Pages[i] = GetPage(guest.RootTable >> PageShift, role.WithQuadrant(i)).Address;
                break;
            }
        }
        Debug.Assert((guest.Cr3 & RootInfo.UnsyncBit) == 0, "a CR3 value with bit 63 set");
        _current = new RootInfo { Pgd = guest.Cr3, Root = root };
        _builds++;
        SyncRoot(ref _current);
    }

    private void EnsureRoot()
    {
        if (_guest is not null && _current.IsNone)
            LoadRoot();
    }

    /// <summary>Sync a root (KVM's kvm_mmu_sync_roots): every unsync page reachable from its pages; the flag clears.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SyncRoot(ref RootInfo root)
    {
        Debug.Assert(!root.IsNone, "syncing no root");
        if (root.IsPae)
        {
            SyncPaeRoot(ref root.Block);
        }
        else
        {
            // A root page is indirect and above level 1, so its exact unsync-children count alone says whether
            // anything needs syncing: a flush of a clean root is one load, no call.
            ShadowPage page = root.Page;
            Debug.Assert(!page.Direct && page.Level > 1, "a 4/5-level root page is indirect");
            if (page.Extra.UnsyncChildCount != 0)
                SyncChildren(page);
        }
        root.Pgd &= ~RootInfo.UnsyncBit;
    }

    private void SyncPaeRoot(ref PaeRoot block)
    {
        for (int i = 0; i < PaeRoot.Entries; i++)
        {
            ShadowPage page = block.Entry(i);
            if (!page.IsNull)
                SyncChildren(page);
        }
    }

    /// <summary>Sync reachable: sync the current root (if any).</summary>
    private void SyncReachable()
    {
        if (!_current.IsNone)
            SyncRoot(ref _current);
    }

    /// <summary>Invalidate gva in root R (KVM's kvm_mmu_invalidate_addr): the unsync page on gva's path has gva's entry synced.</summary>
    private void InvalidateIn(in RootInfo root, ulong gva)
    {
        ShadowPage page = PathLevel1(RootPageFor(root, gva), gva);
        if (!page.IsNull && page.Unsync)
            SyncEntry(page, IndexAt(gva, 1));
    }

    /// <summary>Invalidates gva in every cached root whose PCID is <paramref name="pcid"/>.</summary>
    private void InvalidateInPcid(ulong gva, ulong pcid)
    {
        if (!_current.IsNone && PcidOf(_current) == pcid)
            InvalidateIn(_current, gva);
        for (int i = 0; i < _previousCount; i++)
        {
            if (PcidOf(_previous[i]) == pcid)
                InvalidateIn(_previous[i], gva);
        }
    }

    /// <summary>Flush PCID p (KVM's kvm_invalidate_pcid).</summary>
    private void FlushPcid(ulong pcid)
    {
        if (!_current.IsNone && CurrentPcid == pcid)
            SyncRoot(ref _current);
        if (!_pcide)
            return; // every root has PCID 0 and every MOV CR3 flushes: each previous root is synced when switched in
        for (int i = 0; i < _previousCount;)
        {
            if (PcidOf(_previous[i]) != pcid)
            {
                i++;
                continue;
            }
            if (_rootPolicy == ShadowRootPolicy.Upstream)
            {
                FreePreviousRoot(i); // the later ones move up into i
                continue;
            }
            // A root that reaches no unsync page holds nothing stale: every entry it reaches tracks guest memory.
            if (ReachesUnsync(_previous[i]))
                _previous[i].Pgd |= RootInfo.UnsyncBit;
            i++;
        }
    }

    /// <summary>
    /// KVM's is_unsync_root: some page reachable from the root is unsync. Root pages are indirect and above
    /// level 1 (never unsync themselves), so their exact unsync-children counts answer it in one load each.
    /// </summary>
    private static bool ReachesUnsync(in RootInfo root)
    {
        if (!root.IsPae)
            return root.Page.Extra.UnsyncChildCount != 0;
        ref PaeRoot block = ref root.Block;
        for (int i = 0; i < PaeRoot.Entries; i++)
        {
            ShadowPage page = block.Entry(i);
            if (!page.IsNull && page.Extra.UnsyncChildCount != 0)
                return true;
        }
        return false;
    }

    /// <summary>
    /// Flush all PCIDs (KVM's kvm_mmu_sync_roots then kvm_mmu_sync_prev_roots): the current root is synced; a
    /// previous root that reaches an unsync page is freed (Upstream: "sync prev_roots by simply freeing them")
    /// or flagged (KeepAndResync: the work is deferred to the switch that reuses it).
    /// </summary>
    private void FlushAllPcids()
    {
        SyncReachable();
        for (int i = 0; i < _previousCount;)
        {
            if (!ReachesUnsync(_previous[i]))
            {
                i++;
                continue;
            }
            if (_rootPolicy == ShadowRootPolicy.Upstream)
            {
                FreePreviousRoot(i); // the later ones move up into i
                continue;
            }
            _previous[i].Pgd |= RootInfo.UnsyncBit;
            i++;
        }
    }

    // ---- MOV CR3's switch ----

    /// <summary>
    /// Switch roots (KVM's cached_root_find_and_keep_current / cached_root_find_without_current), LRU: a hit
    /// in previous root i rotates [C, 0, .., i-1] down one; a miss pushes the current root to the front,
    /// evicting the least recently used when that makes four.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SwitchRoots(ulong pgd)
    {
        if (IsRootUsable(_current, pgd))
            return;
        for (int i = 0; i < _previousCount; i++)
        {
            if (IsRootUsable(_previous[i], pgd))
            {
                TakePrevious(i);
                return;
            }
        }
        SwitchMiss();
    }

    private void TakePrevious(int i)
    {
        RootInfo hit = _previous[i];
        if (_current.IsNone)
        {
            RemovePrevious(i);
        }
        else
        {
            for (int j = i; j > 0; j--)
                _previous[j] = _previous[j - 1];
            _previous[0] = _current;
        }
        _current = hit;
        _cachedSwitches++;
        // KVM's kvm_mmu_new_pgd: a root switched back in is in use as a table again.
        if (hit.IsPae)
        {
            ref PaeRoot block = ref hit.Block;
            for (int k = 0; k < PaeRoot.Entries; k++)
            {
                ShadowPage page = block.Entry(k);
                if (!page.IsNull)
                    page.Extra.WriteFlooding = 0;
            }
        }
        else
        {
            hit.Page.Extra.WriteFlooding = 0;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SwitchMiss()
    {
        if (_current.IsNone)
            return;
        if (_previousCount == PreviousRootArray.Capacity)
            FreePreviousRoot(PreviousRootArray.Capacity - 1); // the least recently used
        for (int j = _previousCount; j > 0; j--)
            _previous[j] = _previous[j - 1];
        _previous[0] = _current;
        _previousCount++;
        _current = default;
    }

    /// <summary>Whether the PAE root's pages are those the PDPTE registers give (one entry per present PDPTE, at its table's gfn).</summary>
    private static bool MatchesPdptes(in RootInfo root, GuestVcpu guest)
    {
        ref PaeRoot block = ref root.Block;
        ulong tableMask = guest.Context.TableAddressMask;
        for (int i = 0; i < PaeRoot.Entries; i++)
        {
            ulong pdpte = guest.Pdpte(i);
            ShadowPage page = block.Entry(i);
            if ((pdpte & PagingEntryBits.Present) == 0 ? !page.IsNull : page.IsNull || page.Gfn != (pdpte & tableMask) >> PageShift)
                return false;
        }
        return true;
    }

    // ---- read-back ----

    public ShadowRootView? CurrentRoot
    {
        get
        {
            ThrowIfDisposed();
            return _current.IsNone ? null : View(_current);
        }
    }

    public IReadOnlyList<ShadowRootView> PreviousRoots
    {
        get
        {
            ThrowIfDisposed();
            var roots = new List<ShadowRootView>(_previousCount);
            for (int i = 0; i < _previousCount; i++)
                roots.Add(View(_previous[i]));
            return roots;
        }
    }

    public IReadOnlyList<ShadowPageKey?>? RootKeys
    {
        get
        {
            ThrowIfDisposed();
            return _current.IsNone ? null : PageKeys(_current);
        }
    }

    private static ShadowRootView View(in RootInfo root) =>
        new(root.Cr3, new ShadowRole(RoleWordOf(root)), PageKeys(root), root.Unsync);

    private static List<ShadowPageKey?> PageKeys(in RootInfo root)
    {
        var keys = new List<ShadowPageKey?>(PaeRoot.Entries);
        if (!root.IsPae)
        {
            keys.Add(root.Page.Key);
            return keys;
        }
        ref PaeRoot block = ref root.Block;
        for (int i = 0; i < PaeRoot.Entries; i++)
        {
            ShadowPage page = block.Entry(i);
            keys.Add(page.IsNull ? null : page.Key);
        }
        return keys;
    }
}
