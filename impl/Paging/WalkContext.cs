using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// Everything the walk needs that depends only on <see cref="PagingControls"/>, precomputed once per
/// control change (KVM's kvm_mmu role + reset_guest_paging_metadata). The tables are the whole policy:
/// the walk loop itself only shifts, loads and looks up. Immutable, so a failed control change cannot
/// leave a half-updated context behind.
/// </summary>
internal sealed class WalkContext
{
    public const int MinMaxPhyAddr = 36;
    public const int MaxMaxPhyAddr = 52;

    private const int PageOffsetBits = 12;
    private const int NarrowIndexBits = 10;         // 32-bit paging: 1024 four-byte entries per table
    private const int WideIndexBits = 9;            // 64-bit entries: 512 per table
    private const int NarrowEntryShift = 2;         // log2(4)
    private const int WideEntryShift = 3;           // log2(8)
    private const int Bits32Pse36Cap = 40;          // PSE-36 reaches at most 40 physical bits
    private const int Bits32PhysicalBits = 32;
    private const int Long4LinearBits = 48;
    private const int Long5LinearBits = 57;
    private const ulong PaePdptAddressMask = 0xFFFF_FFE0; // SDM 4.4.1: PDPT address is CR3 bits 31:5
    private const int PdpteReservedLowA = 1, PdpteReservedHighA = 2;
    private const int PdpteReservedLowB = 5, PdpteReservedHighB = 8;
    private const int TopBit = 63;

    public readonly PagingControls Controls;

    /// <summary>8-byte entries (PAE, 4/5-level) rather than 4-byte (32-bit paging).</summary>
    public readonly bool WideEntries;

    /// <summary>PAE: the top level comes from the PDPTE registers, not memory.</summary>
    public readonly bool UsesPdpteRegisters;

    /// <summary>First level read from memory (KVM numbering).</summary>
    public readonly int RootLevel;

    public readonly int EntryShift;
    public readonly ulong IndexMask;

    /// <summary>Entry bits holding the next table's physical address.</summary>
    public readonly ulong TableAddressMask;

    /// <summary>64 - linear-address width for the canonical check; 0 means 32-bit linear addresses.</summary>
    public readonly int CanonicalShift;

    /// <summary>Bit (2*level + PS) set when such an entry maps a page.</summary>
    public readonly uint LeafLevels;

    /// <summary>Access error-code bits reported in #PF (I/D only with SMEP, or NXE with 64-bit entries).</summary>
    public readonly uint ReportedAccessBits;

    public readonly bool EflagsAc;

    /// <summary>Protection-key mask (0 = keys not in effect) and the PKRU it is applied to.</summary>
    public readonly uint PkruMask;
    public readonly uint Pkru;

    /// <summary>Leaf key bits kept in the outcome (0xF with keys in effect, else 0).</summary>
    public readonly uint ProtectionKeyMask;

    /// <summary>CR3 bits that raise #GP on load (4/5-level: 63:M).</summary>
    public readonly ulong Cr3ReservedMask;

    /// <summary>CR3 bits giving the root table (or PAE PDPT) address.</summary>
    public readonly ulong RootAddressMask;

    /// <summary>Reserved bits of a present PDPTE at load time (2:1, 8:5, 63:M).</summary>
    public readonly ulong PdpteReservedMask;

    public readonly PermissionTable Permissions;
    public readonly ReservedBitsTable Reserved;
    public readonly LevelShapeTable Levels;

    private WalkContext(in PagingControls c)
    {
        Controls = c;
        int m = c.MaxPhyAddr;
        bool longMode = c.Mode is PagingMode.Long4 or PagingMode.Long5;
        WideEntries = c.Mode != PagingMode.Bits32;
        UsesPdpteRegisters = c.Mode == PagingMode.Pae;
        EntryShift = WideEntries ? WideEntryShift : NarrowEntryShift;
        int indexBits = WideEntries ? WideIndexBits : NarrowIndexBits;
        IndexMask = (1UL << indexBits) - 1;

        RootLevel = c.Mode switch
        {
            PagingMode.Long5 => 5,
            PagingMode.Long4 => 4,
            _ => 2,
        };
        CanonicalShift = c.Mode switch
        {
            PagingMode.Long5 => 64 - Long5LinearBits,
            PagingMode.Long4 => 64 - Long4LinearBits,
            _ => 0,
        };

        ulong physicalPages = WideEntries
            ? BitRange.Mask(PageOffsetBits, m - 1)
            : BitRange.Mask(PageOffsetBits, Bits32PhysicalBits - 1);
        TableAddressMask = physicalPages;

        int topLevel = longMode ? RootLevel : UsesPdpteRegisters ? 3 : 2;
        for (int level = 1; level <= topLevel; level++)
        {
            int shift = PageOffsetBits + indexBits * (level - 1);
            ulong pse36 = 0;
            if (!WideEntries && level == 2)
                pse36 = BitRange.Mask(0, Math.Min(m, Bits32Pse36Cap) - Bits32PhysicalBits - 1);
            Levels[level] = new LevelShape(shift, physicalPages & ~((1UL << shift) - 1), pse36);
        }

        // Leaves: every PTE; a PS=1 PDE (32-bit paging only with CR4.PSE); a PS=1 PDPTE in 4/5-level.
        LeafLevels = LeafBit(1, 0) | LeafBit(1, 1);
        if (WideEntries || c.Cr4Pse)
            LeafLevels |= LeafBit(2, 1);
        if (longMode)
            LeafLevels |= LeafBit(3, 1);

        bool noExecute = WideEntries && c.EferNxe;
        ReportedAccessBits = PageFaultErrorCode.Write | PageFaultErrorCode.User |
                             (c.Cr4Smep || noExecute ? PageFaultErrorCode.InstructionFetch : 0);
        EflagsAc = c.EflagsAc;

        bool keys = longMode && c.Cr4Pke; // SDM 4.6.2: protection keys exist only in IA-32e paging
        PkruMask = keys ? PkruBitmask.Create(c.Cr0Wp) : 0;
        Pkru = c.Pkru;
        ProtectionKeyMask = keys ? PagingEntryBits.ProtectionKeyMask : 0;

        Cr3ReservedMask = longMode ? BitRange.Mask(m, TopBit) : 0;
        RootAddressMask = UsesPdpteRegisters ? PaePdptAddressMask : physicalPages;
        PdpteReservedMask = BitRange.Mask(PdpteReservedLowA, PdpteReservedHighA) |
                            BitRange.Mask(PdpteReservedLowB, PdpteReservedHighB) |
                            BitRange.Mask(m, TopBit);

        Permissions = PermissionTable.Create(c.Cr0Wp, c.Cr4Smep, c.Cr4Smap, noExecute);
        Reserved = ReservedBitsTable.Create(c);
    }

    public PagingMode Mode => Controls.Mode;

    /// <summary>4/5-level paging: 64-bit CR3 and linear addresses (canonical check instead of a 32-bit range).</summary>
    public bool WideLinearAddresses => CanonicalShift != 0;

    /// <summary>Builds the context; invalid controls throw <see cref="ArgumentOutOfRangeException"/>.</summary>
    public static WalkContext Create(in PagingControls c)
    {
        if ((uint)c.Mode > (uint)PagingMode.Long5)
            ThrowHelper.ArgumentOutOfRange(nameof(PagingControls.Mode), "Unknown paging mode.");
        if (c.MaxPhyAddr is < MinMaxPhyAddr or > MaxMaxPhyAddr)
            ThrowHelper.ArgumentOutOfRange(nameof(PagingControls.MaxPhyAddr), "MAXPHYADDR must be 36..52.");
        return new WalkContext(c);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsLeaf(int level, int pageSizeBit) => ((LeafLevels >> (2 * level + pageSizeBit)) & 1) != 0;

    /// <summary>
    /// The rights verdict for an access with error-code bits <paramref name="pfec"/> on a translation with
    /// <paramref name="rights"/> and protection key <paramref name="key"/> (SDM 4.6; KVM permission_fault):
    /// 0 when permitted, else the #PF error-code bits it adds (P, plus PK for a key violation). Shared by the
    /// guest walk and the shadow MMU's hit check, so both apply exactly the same rule.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint PermissionFault(uint pfec, Privilege priv, uint rights, uint key)
    {
        // Rights (SDM 4.6.1): one table lookup; the SMAP/AC exemption rides in the RSVD index bit.
        bool smapLifted = priv == Privilege.Supervisor && EflagsAc;
        uint faultCode = Permissions.Denies(pfec | (smapLifted ? PermissionTable.SmapLiftedBit : 0), rights) ? PageFaultErrorCode.Present : 0;

        // Protection keys (SDM 4.6.2), independent of the rights verdict (KVM permission_fault).
        if (PkruMask != 0)
        {
            uint keyBits = Pkru >> (int)(key * PkruBitmask.PkruBitsPerKey);
            uint offset = pfec | ((rights & AccessRights.User) != 0 ? PkruBitmask.UserAddressBit : 0);
            if ((keyBits & (PkruMask >> (int)offset) & (PkruBitmask.AccessDisable | PkruBitmask.WriteDisable)) != 0)
                faultCode = PageFaultErrorCode.Present | PageFaultErrorCode.ProtectionKey;
        }
        return faultCode;
    }

    /// <summary>The linear address is canonical (always true with 32-bit linear addresses).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsCanonical(ulong gva) => (ulong)((long)(gva << CanonicalShift) >> CanonicalShift) == gva;

    private static uint LeafBit(int level, int pageSizeBit) => 1u << (2 * level + pageSizeBit);
}
