using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Nested;

internal sealed unsafe partial class NestedEptMmu
{
    // L1 EPT entry bits (SDM Vol. 3C §29.3.2).
    private const ulong LargePage = 1UL << 7, Accessed = 1UL << 8, Dirty = 1UL << 9;

    // Exit-qualification bits of an EPT violation (SDM table "Exit Qualification for EPT Violations").
    private const int DataReadBit = 0, DataWriteBit = 1, FetchBit = 2, RightsShift = 3;

    /// <summary>What FNAME(walk_addr_generic) keeps of a successful walk of L1's EPT (KVM's struct guest_walker).</summary>
    private struct GuestWalk
    {
        public fixed ulong TableGfn[6];   // the gfn of L1's table read at each level
        public fixed uint AccessAbove[6]; // R/W/X ANDed over the entries above that table
        public int LeafLevel;
        public ulong L1Gpa;
        public uint Access;               // R/W/X ANDed over the walk, W removed while the leaf is clean (EPT A/D on)
    }

    public NestedOutcome L2Access(ulong gpa, AccessType type)
    {
        ThrowIfDisposed();
        if (_eptp == 0)
            return Reject("no EPTP: L1 has not entered L2");
        if (gpa >> Math.Min(_maxPhyAddr, PageShift + 9 * EptpLevels(_eptp)) != 0)
            return Reject($"gpa 0x{gpa:X} is wider than MAXPHYADDR {_maxPhyAddr} or the EPT walk");
        uint need = type switch { AccessType.Read => 1u, AccessType.Write => 2u, _ => 4u };
        if (TryHit(gpa, need, out ulong hpa))
            return Translated(gpa, hpa, faulted: false);

        // kvm_mmu_page_fault on L0's EPT violation: walk L1's EPT; a fault there is reflected to L1.
        GuestWalk w = default;
        NestedOutcome walked = WalkL1Ept(gpa, type, ref w);
        if (walked.Kind == NestedOutcomeKind.EptViolation)
            SyncGpaAfterViolation(gpa);
        if (walked.Kind != NestedOutcomeKind.Translated)
            return walked;
        ulong gfn = w.L1Gpa >> PageShift;
        if (_slots.Find(gfn) is not HostMemslot slot)
            return new NestedOutcome(NestedOutcomeKind.MmioExit, gpa, w.L1Gpa, Faulted: true);
        ulong hostPfn = slot.HostPfnBase + (gfn - slot.BaseGfn);
        Install(gpa, ref w, hostPfn);
        return Translated(gpa, (hostPfn << PageShift) | (gpa & 0xFFF), faulted: true);
    }

    private NestedOutcome Translated(ulong gpa, ulong hpa, bool faulted)
    {
        ulong hostPfn = hpa >> PageShift;
        var slot = _slots.HoldingHostFrame(hostPfn);
        ulong l1Gpa = slot is null ? ulong.MaxValue : ((slot.BaseGfn + (hostPfn - slot.HostPfnBase)) << PageShift) | (hpa & 0xFFF);
        return new NestedOutcome(NestedOutcomeKind.Translated, gpa, l1Gpa, hpa, Faulted: faulted);
    }

    /// <summary>The processor's walk of the shadow EPT for L2 (L0's hardware): every level present and the leaf granting <paramref name="need"/>.</summary>
    private bool TryHit(ulong gpa, uint need, out ulong hpa)
    {
        hpa = 0;
        if (_root is not NestedShadowPage root)
            return false;
        ulong* table = (ulong*)root.TableAddress;
        for (int level = root.Role.Level; ; level--)
        {
            ulong spte = table[Index(level, gpa)];
            if ((spte & NestedSpte.PermissionMask) == 0)
                return false;
            if (level == 1)
            {
                if ((spte & need) == 0)
                    return false;
                hpa = (spte & NestedSpte.AddressMask) | (gpa & 0xFFF);
                return true;
            }
            table = (ulong*)(spte & NestedSpte.AddressMask);
        }
    }

    private static int Index(int level, ulong gpa) => (int)((gpa >> (PageShift + 9 * (level - 1))) & 0x1FF);

    /// <summary>
    /// FNAME(walk_addr_generic) over L1's EPT (SDM Vol. 3C §29.3.2, the order of §29.3.3.3): at each level the entry,
    /// then not present (violation), misconfigured (misconfiguration), the rights ANDed, a table or a page; the
    /// access checked against the complete translation; with EPTP bit 6 the A bits of every entry used and the D bit
    /// of a write's leaf set in L1's memory (§29.3.4). A table outside L1's memory ends in a violation with the
    /// rights of the levels above (KVM's error path).
    /// </summary>
    private NestedOutcome WalkL1Ept(ulong gpa, AccessType type, ref GuestWalk w)
    {
        int levels = EptpLevels(_eptp);
        bool accessedDirty = EptpAccessedDirty(_eptp);
        ulong table = _eptp & _addressMask;
        uint rights = 7;
        for (int level = levels; ; level--)
        {
            w.TableGfn[level] = table >> PageShift;
            w.AccessAbove[level] = rights;
            ulong entryGpa = table + ((ulong)Index(level, gpa) << 3);
            if (!TryRead(entryGpa, out ulong e, out _))
                return Violation(gpa, type, rights);
            uint rwx = (uint)(e & 7);
            // Not present: bits 2:0 clear (no mode-based execute control); the rights AND this entry's, so 0.
            if (rwx == 0)
                return Violation(gpa, type, 0);
            bool leaf = level == 1 || (level <= 3 && (e & LargePage) != 0);
            if (Misconfigured(level, e, rwx, leaf) is EptMisconfigKind kind)
                return new NestedOutcome(NestedOutcomeKind.EptMisconfiguration, gpa, Misconfig: kind, Level: level, Faulted: true);
            rights &= rwx;
            if (!leaf)
            {
                table = e & _addressMask;
                continue;
            }

            int shift = PageShift + 9 * (level - 1);
            ulong pageMask = (1UL << shift) - 1;
            uint need = type switch { AccessType.Read => 1u, AccessType.Write => 2u, _ => 4u };
            if ((rights & need) == 0)
                return Violation(gpa, type, rights);
            bool dirty = (e & Dirty) != 0;
            if (accessedDirty)
            {
                // FNAME(update_accessed_dirty_bits): A in every entry used, top down, then D in a write's leaf.
                for (int l = levels; l >= level; l--)
                {
                    ulong at = (w.TableGfn[l] << PageShift) + ((ulong)Index(l, gpa) << 3);
                    SetBits(at, Accessed);
                    if (l == level && type == AccessType.Write)
                        SetBits(at, Dirty);
                }
                dirty |= type == AccessType.Write;
            }
            w.LeafLevel = level;
            w.L1Gpa = (e & _addressMask & ~pageMask) | (gpa & pageMask);
            // FNAME(protect_clean_gpte): a clean leaf maps read-only, so L2's first write faults and sets D.
            w.Access = accessedDirty && !dirty ? rights & ~2u : rights;
            return new NestedOutcome(NestedOutcomeKind.Translated, gpa, w.L1Gpa, Faulted: true);
        }
    }

    /// <summary>§29.3.3.1 in the SDM's order: write without read; execute-only where not offered; a reserved bit; a leaf's memory type 2, 3 or 7.</summary>
    private EptMisconfigKind? Misconfigured(int level, ulong e, uint rwx, bool leaf)
    {
        if (rwx is 2 or 6)
            return EptMisconfigKind.WriteWithoutRead;
        if (rwx == 4 && !_executeOnly)
            return EptMisconfigKind.ExecuteOnlyUnsupported;
        // Bits 51:N everywhere; 7:3 in an entry that references a table; 29:12 (1 GiB) or 20:12 (2 MiB) in a large leaf.
        ulong reserved = 0x000F_FFFF_FFFF_FFFFUL & ~((1UL << _maxPhyAddr) - 1);
        if (!leaf)
            reserved |= 0xF8;
        else if (level == 3)
            reserved |= 0x3FFF_F000;
        else if (level == 2)
            reserved |= 0x1F_F000;
        if ((e & reserved) != 0)
            return EptMisconfigKind.ReservedBits;
        if (leaf && ((e >> 3) & 7) is 2 or 3 or 7)
            return EptMisconfigKind.MemoryType;
        return null;
    }

    /// <summary>The exit qualification KVM reflects to L1 for an L2 access by gpa: the access (bits 2:0) and the rights of the entries used (5:3); no linear address (bits 7 and 8 clear).</summary>
    private static NestedOutcome Violation(ulong gpa, AccessType type, uint rights)
    {
        int accessBit = type switch { AccessType.Read => DataReadBit, AccessType.Write => DataWriteBit, _ => FetchBit };
        ulong qualification = (1UL << accessBit) | ((ulong)(rights & 7) << RightsShift);
        return new NestedOutcome(NestedOutcomeKind.EptViolation, gpa, Qualification: qualification, Faulted: true);
    }

    /// <summary>
    /// FNAME(fetch): from the current root down, each missing level linked to the page for it: indirect pages for
    /// L1's tables down to its leaf's level, direct pages (gfn computed, role access = the walk's) below an L1 large
    /// page; a link whose page no longer matches (a direct page made while the leaf was clean) is replaced
    /// (validate_direct_spte). The leaf maps the host frame with the walk's rights.
    /// </summary>
    private void Install(ulong gpa, ref GuestWalk w, ulong hostPfn)
    {
        int levels = EptpLevels(_eptp);
        bool accessedDirty = EptpAccessedDirty(_eptp);
        MakePagesAvailable();
        NestedShadowPage page = _root ??= LoadRoot(w.TableGfn[levels], levels, accessedDirty);
        for (int level = levels; level > 1; level--)
        {
            InUse(page); // the fault walks through L1's table at this level (direct pages never flood)
            int index = Index(level, gpa);
            int childLevel = level - 1;
            bool direct = childLevel < w.LeafLevel;
            ulong gfn = direct ? (w.L1Gpa >> PageShift) & ~((1UL << (9 * childLevel)) - 1) : w.TableGfn[childLevel];
            var role = NestedRole.Create(childLevel, direct, accessedDirty, _executeOnly, direct ? w.Access : w.AccessAbove[childLevel]);
            var child = page.Children![index];
            if (child is not null && (child.Gfn != gfn || child.Role != role))
            {
                DropEntry(page, index);
                child = null;
            }
            if (child is null)
            {
                child = FindOrCreate(gfn, role);
                SyncLinked(child);
                page.Children[index] = child;
                child.Parents.Add((page, index));
                page.Entry(index) = NestedSpte.Link(child);
            }
            page = child;
        }
        page.Entry(Index(1, gpa)) = NestedSpte.Leaf(hostPfn, w.Access);
    }

    private NestedShadowPage FindOrCreate(ulong gfn, NestedRole role)
    {
        if (_hash.TryGetValue((gfn, role.Bits), out var page))
        {
            InUse(page);
            return page;
        }
        if (!role.Direct && role.Level > 1)
            SyncBeforeUpperLevel(gfn);
        page = new NestedShadowPage(_pool, gfn, role);
        _hash.Add((gfn, role.Bits), page);
        Activate(page);
        _pagesCreated++;
        if (!role.Direct)
        {
            // account_shadowed: L1's table is write-tracked while any page shadows it.
            if (!_tracked.TryGetValue(gfn, out var list))
                _tracked.Add(gfn, list = new List<NestedShadowPage>(1));
            list.Add(page);
        }
        return page;
    }

    /// <summary>mmu_page_zap_pte: the entry goes; a child page loses this parent but stays in the hash.</summary>
    private static void DropEntry(NestedShadowPage page, int index)
    {
        if (page.Children?[index] is NestedShadowPage child)
        {
            child.Parents.Remove((page, index));
            page.Children[index] = null;
        }
        page.Entry(index) = 0;
    }

    /// <summary>Every shadow page freed and every cached root with it (KVM's zap all: the roots are invalid, the vCPU reloads).</summary>
    private void ZapAll()
    {
        foreach (var page in _hash.Values)
            page.Free();
        _hash.Clear();
        _tracked.Clear();
        _unsync.Clear();
        ClearAgeList();
        DropAllRootsAfterZap();
    }
}
