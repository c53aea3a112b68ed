using System.Diagnostics;
using MmuSpec.Impl.Paging;
using MmuSpec.Impl.Tdp;

namespace MmuSpec.Impl.Shadow;

/// <summary>The guest operations: docs/shadow-model.md, "Operations and results".</summary>
internal sealed partial class ShadowMmu
{
    private const int FloodingLimit = 3;

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
        TdpMemslot? slot = FindSlot(gfn);
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
            slot.Dirty?.Mark(gfn - slot.BaseGfn);
            result = ShadowOutcome.Ok;
        }
        CommitZapped();
        return result;
    }

    /// <summary>MOV CR3 under the controls; a mode or CR4.PSE change zaps every page; the root is reloaded.</summary>
    public ShadowOutcome GuestSetPaging(PagingControls controls, ulong cr3)
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

        GuestVcpu? loaded = GuestVcpu.TryCreate(_guestMemory, controls, cr3, out Cr3Loader.Result result);
        if (result == Cr3Loader.Result.OutOfRange)
            return Reject($"CR3 0x{cr3:X} is out of range for {controls.Mode} paging");
        if (loaded is null)
            return ShadowOutcome.GuestFault(WalkOutcome.GeneralProtection);

        GuestVcpu? previous = _guest;
        if (previous is not null && (previous.Controls.Mode != controls.Mode || previous.Controls.Cr4Pse != controls.Cr4Pse))
            ZapAllPages();
        _guest = loaded;
        DropRoot();
        LoadRoot();
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

    /// <summary>For every unsync page on gva's shadow path, the entry at gva's index is synced (the page stays unsync).</summary>
    public ShadowOutcome Invlpg(ulong gva)
    {
        ThrowIfDisposed();
        if (_guest is not GuestVcpu guest)
            return Reject("paging is off");
        if (GvaProblem(guest, gva) is string problem)
            return Reject(problem);
        EnsureRoot();
        if (guest.Context.IsCanonical(gva)) // INVLPG of a non-canonical address does nothing
            InvalidateAddress(gva);
        CommitZapped();
        return ShadowOutcome.Ok;
    }

    /// <summary>
    /// KVM's kvm_mmu_invalidate_addr: the unsync page on gva's shadow path (only level-1 pages go unsync)
    /// has gva's entry synced; the page stays unsync.
    /// </summary>
    private void InvalidateAddress(ulong gva)
    {
        ShadowPage page = PathLevel1(gva);
        if (!page.IsNull && page.Unsync)
            SyncEntry(page, IndexAt(gva, 1));
    }

    public ShadowOutcome FlushTlb()
    {
        ThrowIfDisposed();
        if (_guest is null)
            return Reject("paging is off");
        EnsureRoot();
        SyncReachable();
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
        // under the current controls.
        if (ctx.IsCanonical(gva))
        {
            ShadowPage l1 = PathLevel1(gva);
            if (!l1.IsNull)
            {
                int index = IndexAt(gva, 1);
                ulong spte = l1.Spte(index);
                if (ShadowSpte.IsLeaf(spte)
                    && ctx.PermissionFault(GuestVcpu.AccessErrorCode(type, privilege), privilege, ShadowSpte.Rights(spte), ShadowSpte.Key(spte)) == 0
                    && (!write || ShadowSpte.IsWritable(spte)))
                {
                    ulong offset = gva & PageOffsetMask;
                    return ShadowOutcome.Translated((EntryGfn(l1, index) << PageShift) | offset,
                        (ShadowSpte.HostPfn(spte) << PageShift) | offset, faulted: false);
                }
            }
        }

        // 2. The guest walk over guest memory now; its A/D updates go through the slots below.
        GuestWalkRecord record = default;
        WalkOutcome walk = guest.Observe(gva, type, privilege, ref record);
        if (walk.Status != WalkStatus.Translated)
        {
            // SDM 4.10.4.1: a page fault invalidates the TLB entries for the faulting address.
            if (walk.Status == WalkStatus.PageFault)
                InvalidateAddress(gva);
            return ShadowOutcome.GuestFault(walk);
        }
        int entryBytes = ctx.WideEntries ? sizeof(ulong) : sizeof(uint);
        for (int i = 0; i < record.Count; i++)
            SetGuestEntryBit(record.EntryGpa(i), entryBytes, PagingEntryBits.Accessed);
        ulong leafGpa = record.EntryGpa(record.Count - 1);
        if (write)
            SetGuestEntryBit(leafGpa, entryBytes, PagingEntryBits.Dirty);

        // 3. No slot, or a write into a read-only one: exit (the A/D updates stay).
        ulong gpa = walk.Gpa;
        ulong gfn = gpa >> PageShift;
        TdpMemslot? slot = FindSlot(gfn);
        if (slot is null || (write && slot.ReadOnly))
            return ShadowOutcome.MmioExit(gpa);

        // 4. Fill.
        int guestLeafLevel = walk.PageShift switch { 12 => 1, 21 or 22 => 2, _ => 3 };
        uint finalRights = record.RightsThrough(guestLeafLevel);
        ulong largeFirstGfn = (gpa >> walk.PageShift) << (walk.PageShift - PageShift);
        // The guest leaf as the walk left it: a clean large page gives its direct pages no write access
        // (KVM's protect_clean_gpte), so the first write faults and the walk sets D.
        bool dirtyGuestLeaf = (ReadGuestEntry(leafGpa, entryBytes) & PagingEntryBits.Dirty) != 0;
        uint directRights = dirtyGuestLeaf ? finalRights : finalRights & ~AccessRights.Write;
        ShadowPage page = RootFor(gva);
        // The walk translated, so the root for the gva was loaded from the same PDPTE registers, and a fill
        // zaps only unsync level-1 pages, never a root. A real check all the same: a null page would be a
        // wild pointer in Release.
        if (page.IsNull || !page.Live)
            throw new InvalidOperationException($"no live root page for gva 0x{gva:X} after a translating walk");
        for (int level = page.Level; level >= 2; level--)
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
        ulong hostPfn = slot.HostPfnBase + (gfn - slot.BaseGfn);
        SetLeaf(page, IndexAt(gva, 1), gfn, hostPfn, finalRights, walk.ProtectionKey, writable);
        if (write && logging)
            slot.Dirty!.Mark(gfn - slot.BaseGfn);
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
    private void SetGuestEntryBit(ulong entryGpa, int bytes, ulong bit)
    {
        TdpMemslot? slot = FindSlot(entryGpa >> PageShift);
        Debug.Assert(slot is not null, "the walk read this entry, so a slot backs it");
        ulong current = ReadGuestEntry(entryGpa, bytes);
        if ((current & bit) != 0 || slot.ReadOnly)
            return;
        slot.Host.Store(entryGpa - (slot.BaseGfn << PageShift), current | bit, bytes);
        slot.Dirty?.Mark((entryGpa >> PageShift) - slot.BaseGfn);
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
