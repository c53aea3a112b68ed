using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// L2's own paging (docs/nested-ept.md, "L2's gva accesses"): what the processor does for an L2 access by linear
/// address while L0 runs L2 on the shadow EPT. It walks L2's tables, each entry read, and each of L2's A/D writes,
/// being an access to an L2 gpa made through the shadow EPT; a shadow miss is an EPT violation to L0, which KVM's
/// nested fault path handles as for an access by gpa (walk L1's EPT, install shadow pages, or reflect the violation to
/// L1), so shadow pages get built for L2's page-table pages too. L2's rules come from <see cref="WalkContext"/>, the
/// guest walker's tables.
/// </summary>
internal sealed unsafe partial class NestedEptMmu
{
    // Exit-qualification bits KVM copies from L0's own exit (nested_ept_inject_page_fault): the guest linear address
    // is valid, and, given that, the access was the final one rather than to a guest paging-structure entry.
    private const int LinearAddressValidBit = 7, TranslatedAccessBit = 8;
    private const ulong AccessBitsMask = 7;

    private WalkContext? _l2;          // null: L2's paging is off
    private ulong _l2Root;
    private PdpteRegisters _l2Pdptes;

    public NestedOutcome SetL2Paging(bool pagingOn, in PagingControls controls, ulong cr3, ReadOnlySpan<ulong> pdptes)
    {
        ThrowIfDisposed();
        if (!pagingOn)
        {
            _l2 = null;
            EnteredL2();
            return NestedOutcome.Ok;
        }
        if (pdptes.Length != PdpteRegisters.Count)
            ThrowHelper.Argument(nameof(pdptes), "PAE has four PDPTE fields.");
        WalkContext ctx = WalkContext.Create(controls);
        // VM entry's checks on the guest state (SDM Vol. 3C §27.3.1.1, §27.3.1.6): a failed entry leaves L2's state.
        if (!ctx.WideLinearAddresses && cr3 > uint.MaxValue)
            return Reject($"CR3 0x{cr3:X} is wider than 32 bits outside IA-32e paging");
        if ((cr3 & ctx.Cr3ReservedMask) != 0)
            return Reject($"CR3 0x{cr3:X} sets bits at or above MAXPHYADDR");
        if (ctx.UsesPdpteRegisters)
        {
            for (int i = 0; i < PdpteRegisters.Count; i++)
            {
                if ((pdptes[i] & PagingEntryBits.Present) != 0 && (pdptes[i] & ctx.PdpteReservedMask) != 0)
                    return Reject($"the guest PDPTE{i} field sets reserved bits");
            }
        }
        _l2 = ctx;
        _l2Root = cr3 & ctx.RootAddressMask;
        for (int i = 0; i < PdpteRegisters.Count; i++)
            _l2Pdptes[i] = ctx.UsesPdpteRegisters ? pdptes[i] : 0;
        EnteredL2();
        // Model: the layer keeps one address space per VPID, so a new paging state drops the VPID's mappings (hardware and
        // KVM keep them under VPID: L1 must INVVPID).
        if (_gvaTlbEnabled)
            FlushGva(L2PhysicalVpid, gvaPage: null);
        return NestedOutcome.Ok;
    }

    [SkipLocalsInit]
    public NestedOutcome L2GvaAccess(ulong gva, AccessType type, Privilege privilege)
    {
        ThrowIfDisposed();
        if ((uint)type > (uint)AccessType.Fetch || (uint)privilege > (uint)Privilege.ImplicitSupervisor ||
            (type == AccessType.Fetch && privilege == Privilege.ImplicitSupervisor))
            ThrowHelper.ArgumentOutOfRange(nameof(type), "Not an access the processor makes.");
        if (_eptp == 0)
            return Reject("no EPTP: L1 has not entered L2");
        int eptBits = PageShift + 9 * EptpLevels(_eptp);
        if (_l2 is not WalkContext ctx)
        {
            // Paging off: the gva is the gpa (the final access, with a linear address).
            if (gva >> Math.Min(_maxPhyAddr, eptBits) != 0)
                return Reject($"gva 0x{gva:X} (paging off) is wider than MAXPHYADDR or the EPT walk");
            return FinalAccess(gva, gva, type);
        }
        if (!ctx.WideLinearAddresses && gva > uint.MaxValue)
            return Reject($"gva 0x{gva:X} is wider than 32 bits outside IA-32e paging");
        if (ctx.Controls.MaxPhyAddr > eptBits)
            return Reject($"L2's MAXPHYADDR {ctx.Controls.MaxPhyAddr} is wider than the {eptBits} bits the EPT translates");
        if (!ctx.IsCanonical(gva))
            return new NestedOutcome(NestedOutcomeKind.L2GeneralProtection, Gla: gva);

        uint pfec = GuestVcpu.AccessErrorCode(type, privilege);
        uint reported = pfec & ctx.ReportedAccessBits;
        if (_gvaTlbEnabled && TryGvaHit(ctx, gva, type, privilege, pfec, out NestedOutcome cached))
            return cached;
        int level = ctx.RootLevel;
        ulong table = _l2Root;
        if (ctx.UsesPdpteRegisters)
        {
            // PAE: the top level is the PDPTE registers VM entry loaded; no rights, no A bit, no memory access.
            ulong pdpte = _l2Pdptes[(int)(gva >> PdpteRegisters.IndexShift) & PdpteRegisters.IndexMask];
            if ((pdpte & PagingEntryBits.Present) == 0)
                return L2PageFault(gva, reported);
            table = pdpte & ctx.TableAddressMask;
            level = 2;
        }

        bool wide = ctx.WideEntries;
        // The L2 gpa and the value read of each entry used, for the A/D pass.
        Span<ulong> usedGpa = stackalloc ulong[5];
        Span<ulong> usedValue = stackalloc ulong[5];
        int walked = 0;
        uint rights = AccessRights.All;
        ulong pte;
        while (true)
        {
            ulong index = (gva >> ctx.Levels[level].Shift) & ctx.IndexMask;
            ulong entryGpa = table + (index << ctx.EntryShift);
            NestedOutcome read = Reach(entryGpa, AccessType.Read, pagingStructure: true, gva);
            if (read.Kind == NestedOutcomeKind.MmioExit)
                return L2PageFault(gva, reported); // an L2 table outside L1's memory: not present (no memslot)
            if (read.Kind != NestedOutcomeKind.Translated)
                return read;
            pte = ReadEntry(read.L1Gpa, wide);
            if ((pte & PagingEntryBits.Present) == 0)
                return L2PageFault(gva, reported);
            int pageSizeBit = (int)(pte >> PagingEntryBits.PageSizeShift) & 1;
            if ((pte & ctx.Reserved.Mask(pageSizeBit, level)) != 0)
                return L2PageFault(gva, reported | PageFaultErrorCode.Present | PageFaultErrorCode.ReservedBit);
            usedGpa[walked] = entryGpa;
            usedValue[walked++] = pte;
            rights &= AccessRights.OfEntry(pte);
            if (ctx.IsLeaf(level, pageSizeBit))
                break;
            table = pte & ctx.TableAddressMask;
            level--;
        }

        uint key = (uint)(pte >> PagingEntryBits.ProtectionKeyShift) & ctx.ProtectionKeyMask;
        uint faultCode = ctx.PermissionFault(pfec, privilege, rights, key);
        if (faultCode != 0)
            return L2PageFault(gva, faultCode | reported);
        ref readonly LevelShape leaf = ref ctx.Levels[level];
        ulong pageBase = (pte & leaf.LeafAddressMask) |
                         (((pte >> PagingEntryBits.Pse36LowBit) & leaf.Pse36Mask) << PagingEntryBits.Pse36TargetBit);
        ulong gpa = pageBase | (gva & ((1UL << leaf.Shift) - 1));

        // The final access before L2's A/D writes, which happen only once the whole translation is allowed (KVM's
        // walk_addr_generic order; the SDM does not order them). An L1 gpa outside the slots still sets them: KVM
        // emulates the MMIO access, walking L2's tables in software first.
        NestedOutcome final = FinalAccess(gpa, gva, type);
        if (final.Kind is not (NestedOutcomeKind.Translated or NestedOutcomeKind.MmioExit))
            return final;

        // SDM §4.8: A in every entry used, top down, then D in a write's leaf; each write an access to a paging-structure
        // entry through the shadow EPT. An entry used twice (a table mapping itself) is written once.
        for (int i = 0; i < walked; i++)
        {
            NestedOutcome written = SetL2Bits(usedGpa[..walked], usedValue[..walked], i, PagingEntryBits.Accessed, wide, gva);
            if (written.Kind != NestedOutcomeKind.Ok)
                return written;
        }
        if (type == AccessType.Write)
        {
            NestedOutcome written = SetL2Bits(usedGpa[..walked], usedValue[..walked], walked - 1, PagingEntryBits.Dirty, wide, gva);
            if (written.Kind != NestedOutcomeKind.Ok)
                return written;
        }
        if (_gvaTlbEnabled && final.Kind == NestedOutcomeKind.Translated)
            GvaFill(gva, final, type, rights, key);
        return final;
    }

    /// <summary>The access to the final L2 gpa: translated (L1 gpa, hpa), an exit to L1 (bit 8 set) or an MMIO exit.</summary>
    private NestedOutcome FinalAccess(ulong gpa, ulong gva, AccessType type) => Reach(gpa, type, pagingStructure: false, gva);

    /// <summary>
    /// ORs <paramref name="bit"/> into used entry <paramref name="i"/> unless it already holds it (as read by this walk,
    /// with the bits this pass set at the same L2 gpa): a write through the shadow EPT, an exit to L1 ending the walk
    /// (the bits before it stay), an L1 gpa outside the slots dropping the write. The hardware's write into a table L1's
    /// EPT uses is caught like L1's own store (KVM write-protects shadowed gfns and emulates the write).
    /// </summary>
    private NestedOutcome SetL2Bits(Span<ulong> usedGpa, Span<ulong> usedValue, int i, ulong bit, bool wide, ulong gva)
    {
        if ((usedValue[i] & bit) != 0)
            return NestedOutcome.Ok;
        for (int j = 0; j < usedGpa.Length; j++)
        {
            if (usedGpa[j] == usedGpa[i])
                usedValue[j] |= bit;
        }
        NestedOutcome reach = Reach(usedGpa[i], AccessType.Write, pagingStructure: true, gva);
        if (reach.Kind == NestedOutcomeKind.MmioExit)
            return NestedOutcome.Ok;
        if (reach.Kind != NestedOutcomeKind.Translated)
            return reach;
        ulong before = ReadEntry(reach.L1Gpa, wide);
        if ((before & bit) == 0)
            L1Store(reach.L1Gpa, before | bit, wide ? sizeof(ulong) : sizeof(uint));
        return NestedOutcome.Ok;
    }

    /// <summary>The 4- or 8-byte entry at L1 gpa <paramref name="l1Gpa"/> (inside a slot).</summary>
    private ulong ReadEntry(ulong l1Gpa, bool wide)
    {
        TryRead(l1Gpa & ~7UL, out ulong word, out _);
        return wide ? word : (word >> (int)((l1Gpa & 4) * 8)) & 0xFFFF_FFFF;
    }

    private static NestedOutcome L2PageFault(ulong gva, uint errorCode) =>
        new(NestedOutcomeKind.L2PageFault, Gla: gva, ErrorCode: errorCode);

    /// <summary>
    /// The processor's access to L2 gpa <paramref name="gpa"/> through the shadow EPT for linear address
    /// <paramref name="gva"/>. With EPT A/D (EPTP bit 6) an access to a guest paging-structure entry is treated as a
    /// write (SDM Vol. 3C §29.3.4; KVM ae1e2d1082ae), so it needs W and its L1 walk sets D. A shadow miss is L0's EPT
    /// violation: L1's EPT is walked and the translation installed, or the violation reflected to L1 with bits 2:0 for
    /// this access (a paging-structure access sets the read bit, also when treated as a write) and bits 7 and 8 as
    /// L0's exit gave them (nested_ept_inject_page_fault). Translated carries the L1 gpa and hpa.
    /// </summary>
    private NestedOutcome Reach(ulong gpa, AccessType type, bool pagingStructure, ulong gva)
    {
        bool asWrite = type == AccessType.Write || (pagingStructure && EptpAccessedDirty(_eptp));
        AccessType effective = asWrite ? AccessType.Write : type;
        uint need = effective switch { AccessType.Read => 1u, AccessType.Write => 2u, _ => 4u };
        if (TryHit(gpa, need, out ulong hpa))
            return Translated(gpa, hpa, faulted: false);

        GuestWalk w = default;
        NestedOutcome walked = WalkL1Ept(gpa, effective, ref w);
        if (walked.Kind == NestedOutcomeKind.EptViolation)
        {
            ulong access = (type == AccessType.Read || pagingStructure ? 1UL << DataReadBit : 0)
                           | (asWrite ? 1UL << DataWriteBit : 0)
                           | (type == AccessType.Fetch ? 1UL << FetchBit : 0);
            ulong qualification = (walked.Qualification & ~AccessBitsMask) | access | (1UL << LinearAddressValidBit)
                                   | (pagingStructure ? 0 : 1UL << TranslatedAccessBit);
            return walked with { Qualification = qualification, Gla = gva };
        }
        if (walked.Kind != NestedOutcomeKind.Translated)
            return walked;
        ulong gfn = w.L1Gpa >> PageShift;
        if (_slots.Find(gfn) is not HostMemslot slot)
            return new NestedOutcome(NestedOutcomeKind.MmioExit, gpa, w.L1Gpa, Faulted: true);
        ulong hostPfn = slot.HostPfnBase + (gfn - slot.BaseGfn);
        Install(gpa, ref w, hostPfn);
        return Translated(gpa, (hostPfn << PageShift) | (gpa & 0xFFF), faulted: true);
    }
}
