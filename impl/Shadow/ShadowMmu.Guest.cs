using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>The guest operations: docs/shadow-model.md, "Operations and results".</summary>
internal sealed partial class ShadowMmu
{
    private const int FloodingLimit = 3;
    private const ulong InvpcidAddress = 0, InvpcidSingleContext = 1, InvpcidAllContexts = 3;

    /// <summary>Write-protected gfn whose unsync fails: emulated, then the tracked-write rule; else just stored.</summary>
    public ShadowOutcome GuestStore(ulong gpa, ulong value, int size)
    {
        ThrowIfDisposed();
        if (size is not (sizeof(uint) or sizeof(ulong)))
            return Reject($"store size {size} is not 4 or 8");
        if ((gpa & (ulong)(size - 1)) != 0)
            return Reject($"gpa 0x{gpa:X} is not aligned to the {size}-byte store");
        if ((gpa >> _maxPhyAddr) != 0)
            return Reject($"gpa 0x{gpa:X} is not below 2^{_maxPhyAddr}");
        EnsureRoot();

        ulong gfn = gpa >> PageShift;
        HostMemslot? slot = FindSlot(gfn);
        ShadowOutcome result;
        if (slot is null || slot.ReadOnly)
        {
            result = ShadowOutcome.MmioExit(gpa);
        }
        else
        {
            bool emulated = IsWriteProtected(gfn) && !TryUnsync(gfn);
            slot.Host.Store(gpa - (slot.BaseGfn << PageShift), value, size);
            if (emulated)
                TrackedWrite(gpa, size);
            slot.MarkDirty(gfn);
            result = ShadowOutcome.Ok;
        }
        CommitZapped();
        return result;
    }

    /// <summary>
    /// MOV CR3 under the controls; a mode or CR4.PSE change zaps every page; every cached root is freed and
    /// the root loaded (KVM's kvm_mmu_reset_context).
    /// </summary>
    public ShadowOutcome GuestSetPaging(PagingControls controls, ulong cr3, bool pcide = false)
    {
        ThrowIfDisposed();
        if ((uint)controls.Mode > (uint)PagingMode.Long5)
            return Reject($"unknown paging mode {controls.Mode}");
        if (controls.MaxPhyAddr != _maxPhyAddr)
            return Reject($"MAXPHYADDR {controls.MaxPhyAddr} is not the VM's {_maxPhyAddr}");
        if (controls.Cr4Pke)
            return Reject("KVM offers protection keys only with TDP: CR4.PKE cannot be set under shadow paging");
        if (controls.Mode is PagingMode.Bits32 or PagingMode.Pae && cr3 > uint.MaxValue)
            return Reject($"CR3 0x{cr3:X} does not fit in 32 bits in {controls.Mode} paging");
        if (pcide && controls.Mode is not (PagingMode.Long4 or PagingMode.Long5))
            return Reject($"CR4.PCIDE needs 4/5-level paging, not {controls.Mode}");

        GuestVcpu? loaded = GuestVcpu.TryCreate(_guestMemory, controls, cr3, out Cr3Loader.Result result);
        if (result == Cr3Loader.Result.OutOfRange)
            return Reject($"CR3 0x{cr3:X} is out of range for {controls.Mode} paging");
        if (loaded is null)
            return ShadowOutcome.GuestFault(WalkOutcome.GeneralProtection);

        GuestVcpu? previous = _guest;
        if (previous is not null && (previous.Controls.Mode != controls.Mode || previous.Controls.Cr4Pse != controls.Cr4Pse))
            ZapAllPages();
        FreeAllRoots();
        _guest = loaded;
        _pcide = pcide;
        _rootRole = BaseRole(controls).WithLevel(loaded.Context.RootLevel);
        LoadRoot();
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    /// <summary>
    /// MOV to CR3 (KVM's kvm_set_cr3, kvm_mmu_new_pgd, kvm_invalidate_pcid): the new CR3, a switch to a cached
    /// root (or a build), then the flush unless NOFLUSH. The hot case, a NOFLUSH switch to a cached 4-level
    /// root, touches only the 64 bytes of cached roots and the root page's header and data: no allocation.
    /// </summary>
    public ShadowOutcome GuestMovCr3(ulong cr3)
    {
        ThrowIfDisposed();
        if (_guest is not GuestVcpu guest)
            return Reject("paging is off");
        // With CR4.PCIDE bit 63 is NOFLUSH and never part of CR3; without it the operand is the value (and
        // in 4/5-level paging bit 63 is then a reserved CR3 bit: #GP below).
        bool noFlush = _pcide && (cr3 & NoFlushBit) != 0;
        ulong value = _pcide ? cr3 & ~NoFlushBit : cr3;
        if (!guest.Context.WideLinearAddresses && value > uint.MaxValue)
            return RejectNarrowCr3(value, guest.Controls.Mode);

        // 1. MOV CR3 under the current controls (PAE: the PDPTEs are loaded and checked); #GP changes nothing.
        if (!guest.MovCr3(value))
            return ShadowOutcome.GuestFault(WalkOutcome.GeneralProtection);

        // 2. Switch roots.
        SwitchRoots(value);

        // 3. A PAE root whose pages are not those the new PDPTE registers give is rebuilt.
        if (!_current.IsNone && guest.Context.UsesPdpteRegisters && !MatchesPdptes(_current, guest))
            FreeCurrentRoot();

        // 4. A root flagged unsync (KeepAndResync) is synced before it is used again.
        if (_current.Unsync)
        {
            SyncRoot(ref _current);
            _resyncs++;
        }

        // 5. A miss: build the root.
        if (_current.IsNone)
            LoadRoot();

        // 6. The flush of the new PCID.
        if (!noFlush)
            FlushPcid(_pcide ? value & PcidMask : 0);
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ShadowOutcome RejectNarrowCr3(ulong value, PagingMode mode) =>
        Reject($"CR3 0x{value:X} does not fit in 32 bits in {mode} paging");

    /// <summary>INVPCID (KVM's kvm_handle_invpcid): types 0 (address), 1 (single context), 2 and 3 (all contexts).</summary>
    public ShadowOutcome Invpcid(ulong type, ulong pcid, ulong gva)
    {
        ThrowIfDisposed();
        if (_guest is not GuestVcpu guest)
            return Reject("paging is off");
        if (GvaProblem(guest, gva) is string problem)
            return Reject(problem);
        if (type > InvpcidAllContexts
            || pcid > PcidMask
            || (type <= InvpcidSingleContext && !_pcide && pcid != 0)
            || (type == InvpcidAddress && !guest.Context.IsCanonical(gva)))
        {
            return ShadowOutcome.GuestFault(WalkOutcome.GeneralProtection);
        }
        EnsureRoot();
        switch (type)
        {
            case InvpcidAddress:
                InvalidateInPcid(gva, pcid); // KVM's kvm_mmu_invpcid_gva
                break;
            case InvpcidSingleContext:
                FlushPcid(pcid);
                break;
            default:
                FlushAllPcids(); // KVM does not mark global entries: type 3 does what type 2 does
                break;
        }
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    public ShadowOutcome GuestAccess(ulong gva, AccessType type, Privilege privilege)
    {
        ThrowIfDisposed();
        if (_guest is not GuestVcpu guest)
            return Reject("paging is off");
        if ((uint)type > (uint)AccessType.Fetch)
            return Reject($"unknown access type {type}");
        if ((uint)privilege > (uint)Privilege.ImplicitSupervisor)
            return Reject($"unknown privilege {privilege}");
        if (type == AccessType.Fetch && privilege == Privilege.ImplicitSupervisor)
            return Reject("an implicit supervisor access is never an instruction fetch");
        if (GvaProblem(guest, gva) is string problem)
            return Reject(problem);
        EnsureRoot();
        ShadowOutcome outcome = Access(guest, gva, type, privilege);
        CommitZapped();
        return outcome;
    }

    /// <summary>
    /// Invalidates gva in the current root and every previous one (KVM's kvm_mmu_invlpg: INVLPG also removes
    /// global translations of every PCID, and KVM does not know which entries are global).
    /// </summary>
    public ShadowOutcome Invlpg(ulong gva)
    {
        ThrowIfDisposed();
        if (_guest is not GuestVcpu guest)
            return Reject("paging is off");
        if (GvaProblem(guest, gva) is string problem)
            return Reject(problem);
        EnsureRoot();
        if (guest.Context.IsCanonical(gva)) // INVLPG of a non-canonical address does nothing
        {
            InvalidateIn(_current, gva);
            for (int i = 0; i < _previousCount; i++)
                InvalidateIn(_previous[i], gva);
        }
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    /// <summary>Flush all PCIDs (a CR4.PGE toggle).</summary>
    public ShadowOutcome FlushTlb()
    {
        ThrowIfDisposed();
        if (_guest is null)
            return Reject("paging is off");
        EnsureRoot();
        FlushAllPcids();
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    private static string? GvaProblem(GuestVcpu guest, ulong gva) =>
        !guest.Context.WideLinearAddresses && gva > uint.MaxValue
            ? $"gva 0x{gva:X} is wider than 32 bits in {guest.Controls.Mode} paging"
            : null;

    /// <summary>GuestAccess steps 1 to 4: hit, guest walk, MMIO exit, fill.</summary>
    private ShadowOutcome Access(GuestVcpu guest, ulong gva, AccessType type, Privilege privilege)
    {
        WalkContext ctx = guest.Context;
        bool write = type == AccessType.Write;

        // 1. Hit: the hardware walks the shadow tables; rights judged by the walker's own permission rule
        // under the current controls. The descent keeps the pages it passed (path[level]): a fault's fill
        // follows them instead of descending again (KVM's FNAME(fetch) reuses the walk the same way).
        ShadowPage root = RootFor(gva);
        ShadowPath path = default;
        if (ctx.IsCanonical(gva) && !root.IsNull)
        {
            ShadowPage reached = root;
            int at = reached.Level;
            path[at] = reached;
            while (at > 1)
            {
                ulong table = reached.Spte(IndexAt(gva, at));
                if (!ShadowSpte.IsTable(table))
                    break;
                reached = ShadowSpte.Child(table);
                path[--at] = reached;
            }
            if (at == 1)
            {
                int index = IndexAt(gva, 1);
                ulong spte = reached.Spte(index);
                if (ShadowSpte.IsLeaf(spte)
                    && ctx.PermissionFault(GuestVcpu.AccessErrorCode(type, privilege), privilege, ShadowSpte.Rights(spte), ShadowSpte.Key(spte)) == 0
                    && (!write || ShadowSpte.IsWritable(spte)))
                {
                    ulong offset = gva & PageOffsetMask;
                    return ShadowOutcome.Translated((EntryGfn(reached, index) << PageShift) | offset,
                        (ShadowSpte.HostPfn(spte) << PageShift) | offset, faulted: false);
                }
            }
        }

        // 2. The guest walk over guest memory now; its A/D updates go through the slots below.
        GuestWalkRecord record = default;
        WalkOutcome walk = guest.Observe(gva, type, privilege, ref record);
        if (walk.Status != WalkStatus.Translated)
        {
            // SDM 4.10.4.1: a page fault invalidates the TLB entries for the faulting address in the current
            // PCID, so in every root of that PCID (a NOFLUSH switch to one must not bring the entry back).
            if (walk.Status == WalkStatus.PageFault)
                InvalidateInPcid(gva, CurrentPcid);
            return ShadowOutcome.GuestFault(walk);
        }
        // An entry the walk read with A (the leaf: D) already set is left alone: guest memory only gains A/D
        // bits during the access, so the bit is still set and the pass would store nothing (as the guest
        // walker skips its write-back); this saves the slot lookup and re-read per entry of a warm walk.
        int entryBytes = ctx.WideEntries ? sizeof(ulong) : sizeof(uint);
        for (int i = 0; i < record.Count; i++)
        {
            if ((record.EntryValue(i) & PagingEntryBits.Accessed) == 0)
                SetGuestEntryBit(record.EntryGpa(i), entryBytes, PagingEntryBits.Accessed);
        }
        ulong leafGpa = record.EntryGpa(record.Count - 1);
        // The guest leaf as the walk leaves it: a clean large page gives its direct pages no write access
        // (KVM's protect_clean_gpte), so the first write faults and the walk sets D. Setting A on an
        // earlier entry never sets D, even where a table maps itself (the leaf's gpa is an upper entry's).
        bool dirtyGuestLeaf = (record.EntryValue(record.Count - 1) & PagingEntryBits.Dirty) != 0
            || (write && SetGuestEntryBit(leafGpa, entryBytes, PagingEntryBits.Dirty));

        // 3. No slot, or a write into a read-only one: exit (the A/D updates stay). The slot is resolved
        // once here: the leaf's rmap below comes from it, not from a second lookup.
        ulong gpa = walk.Gpa;
        ulong gfn = gpa >> PageShift;
        HostMemslot? slot = FindSlot(gfn);
        if (slot is null || (write && slot.ReadOnly))
            return ShadowOutcome.MmioExit(gpa);

        // 4. Fill.
        int guestLeafLevel = walk.PageShift switch { 12 => 1, 21 or 22 => 2, _ => 3 };
        uint finalRights = record.RightsThrough(guestLeafLevel);
        ulong largeFirstGfn = (gpa >> walk.PageShift) << (walk.PageShift - PageShift);
        uint directRights = dirtyGuestLeaf ? finalRights : finalRights & ~AccessRights.Write;
        ShadowPage page = root;
        // The walk translated, so the root for the gva was loaded from the same PDPTE registers, and a fill
        // zaps only unsync level-1 pages, never a root. A real check all the same: a null page would be a
        // wild pointer in Release.
        if (page.IsNull || !page.Live)
            throw new InvalidOperationException($"no live root page for gva 0x{gva:X} after a translating walk");
        int level = page.Level;
        Debug.Assert(path[level] == page, "the translating walk's gva is canonical, so the descent started at the root");

        // Along the path the descent found: the shadow tables have not changed since (the guest walk and its
        // A/D updates are not tracked writes), so path[level - 1] is still what entry IndexAt(gva, level) links.
        for (; level >= 2 && !path[level - 1].IsNull; level--)
        {
            if (level >= guestLeafLevel && !page.Direct)
                page.Extra.WriteFlooding = 0; // the guest walked through this table
            ShadowPage linked = path[level - 1];
            Debug.Assert(page.Spte(IndexAt(gva, level)) == ShadowSpte.MakeTable(linked), "the descent's path changed before the fill");
            // Where the large guest page is split, a direct child built for other rights is unlinked and
            // replaced (KVM's validate_direct_spte) by the loop below, from this level.
            if (level == guestLeafLevel && (linked.Gfn != largeFirstGfn || linked.Role != DirectChildRole(page, IndexAt(gva, level), level, directRights)))
                break;
            page = linked;
        }

        // Below it, the general case: follow, split or create (a page found by key may have entries).
        for (; level >= 2; level--)
        {
            if (level >= guestLeafLevel && !page.Direct)
                page.Extra.WriteFlooding = 0; // the guest walked through this table
            int index = IndexAt(gva, level);
            ulong spte = page.Spte(index);
            if (ShadowSpte.IsTable(spte))
            {
                ShadowPage linked = ShadowSpte.Child(spte);
                // Follow it, except where the large guest page is split: a direct child built for other
                // rights is unlinked and replaced (KVM's validate_direct_spte).
                if (level != guestLeafLevel || (linked.Gfn == largeFirstGfn && linked.Role == DirectChildRole(page, index, level, directRights)))
                {
                    page = linked;
                    continue;
                }
                RemoveEntry(page, index);
            }
            Debug.Assert(!ShadowSpte.IsPresent(page.Spte(index)), "a leaf above level 1");
            ShadowRole parentRole = page.Role;
            int quadrant = parentRole.Has4ByteGpte && level - 1 == 1 ? index & 1 : 0;
            ulong childGfn;
            ShadowRole childRole;
            if (level > guestLeafLevel)
            {
                childGfn = (record.Pte(level) & ctx.TableAddressMask) >> PageShift;
                childRole = parentRole.WithLevel(level - 1).WithDirect(false).WithAccess(record.RightsThrough(level)).WithQuadrant(quadrant);
            }
            else if (level == guestLeafLevel)
            {
                childGfn = largeFirstGfn;
                childRole = DirectChildRole(page, index, level, directRights);
            }
            else
            {
                childGfn = EntryGfn(page, index);
                childRole = parentRole.WithLevel(level - 1).WithQuadrant(0);
            }
            ShadowPage child = GetPage(childGfn, childRole);
            Link(page, index, child);
            page = child;
        }

        bool logging = slot.DirtyLogging;
        // The conjuncts in the contract's order, evaluated left to right: unsync is tried only when the
        // others allow a writable entry (as KVM's make_spte tries it only for an SPTE it would make writable).
        bool writable = !slot.ReadOnly && dirtyGuestLeaf && (!logging || write)
            && (write ? TryUnsync(gfn) : !IsWriteProtected(gfn));
        ulong offsetInSlot = gfn - slot.BaseGfn;
        ulong hostPfn = slot.HostPfnBase + offsetInSlot;
        SetLeaf(page, IndexAt(gva, 1), gfn, hostPfn, finalRights, walk.ProtectionKey, writable, _rmapsById[slot.Id]!, offsetInSlot);
        if (write && logging)
            slot.Dirty!.Mark(gfn - slot.BaseGfn);
        if (_prefetch)
            PrefetchNeighbours(page, IndexAt(gva, 1), finalRights, walk.ProtectionKey);
        return ShadowOutcome.Translated(gpa, (hostPfn << PageShift) | (gpa & PageOffsetMask), faulted: true);
    }

    /// <summary>The role of the direct page that splits a guest large page below entry <paramref name="index"/> at <paramref name="level"/>.</summary>
    private static ShadowRole DirectChildRole(ShadowPage parent, int index, int level, uint rights)
    {
        ShadowRole parentRole = parent.Role;
        int quadrant = parentRole.Has4ByteGpte && level - 1 == 1 ? index & 1 : 0;
        return parentRole.WithLevel(level - 1).WithDirect(true).WithAccess(rights).WithQuadrant(quadrant);
    }

    /// <summary>
    /// One A/D update: when <paramref name="bit"/> is clear in the entry as it is now, the entry with it set is
    /// stored, unless its slot is read-only (KVM skips A/D updates there); a logging slot marks the table dirty.
    /// Not a tracked write: KVM's walker updates guest memory directly.
    /// </summary>
    /// <returns>Whether the entry has the bit now.</returns>
    private bool SetGuestEntryBit(ulong entryGpa, int bytes, ulong bit)
    {
        HostMemslot? slot = FindSlot(entryGpa >> PageShift);
        Debug.Assert(slot is not null, "the walk read this entry, so a slot backs it");
        ulong current = ReadGuestEntry(entryGpa, bytes);
        if ((current & bit) != 0)
            return true;
        if (slot.ReadOnly)
            return false;
        slot.Host.Store(entryGpa - (slot.BaseGfn << PageShift), current | bit, bytes);
        slot.MarkDirty(entryGpa >> PageShift);
        return true;
    }

    private ulong ReadGuestEntry(ulong gpa, int bytes)
    {
        if (bytes == sizeof(ulong))
        {
            _guestMemory.TryRead64(gpa, out ulong wide);
            return wide;
        }
        _guestMemory.TryRead32(gpa, out uint narrow);
        return narrow;
    }

    /// <summary>The tracked-write rule (KVM's kvm_mmu_track_write) for an emulated store.</summary>
    private void TrackedWrite(ulong gpa, int size)
    {
        ulong gfn = gpa >> PageShift;
        int offset = (int)(gpa & PageOffsetMask);

        // The indirect pages of gfn, sorted by role word into a reused buffer (a handful of pages, no
        // allocation). The contract says "key order", but the end state does not depend on the order: a zap
        // in this loop can only remove other pages of the gfn that it would zap or clear anyway (its unsync
        // descendants); the sort just makes the visiting order deterministic.
        int count = 0;
        for (ShadowPage p = _hash.Bucket(gfn); !p.IsNull; p = p.HashNext)
        {
            if (p.Gfn != gfn || p.Direct)
                continue;
            if (count == _scratch.Length)
                Array.Resize(ref _scratch, count * 2);
            int j = count++;
            uint word = p.Role.Word;
            while (j > 0 && ShadowPage.FromAddress(_scratch[j - 1]).Role.Word > word)
            {
                _scratch[j] = _scratch[j - 1];
                j--;
            }
            _scratch[j] = p.Address;
        }

        for (int k = 0; k < count; k++)
        {
            ShadowPage page = ShadowPage.FromAddress(_scratch[k]);
            if (!page.Live)
                continue; // zapped by an earlier page's zap
            ShadowRole role = page.Role;
            int entrySize = role.Has4ByteGpte ? sizeof(uint) : sizeof(ulong);
            bool misaligned = ((offset ^ (offset + size - 1)) & ~(entrySize - 1)) != 0;
            bool flooded = !misaligned && role.Level > 1 && ++page.Extra.WriteFlooding >= FloodingLimit;
            if (misaligned || flooded)
            {
                ZapPage(page);
                continue;
            }
            if (entrySize == sizeof(ulong))
            {
                RemoveEntry(page, offset / sizeof(ulong));
                continue;
            }
            int g = offset / sizeof(uint);
            if (role.Level == 1)
            {
                if (g >> 9 == role.Quadrant)
                    RemoveEntry(page, g & IndexMask);
            }
            else if (g >> 8 == role.Quadrant)
            {
                RemoveEntry(page, 2 * (g & 255));
                RemoveEntry(page, 2 * (g & 255) + 1);
            }
        }
    }
}
