namespace MmuSpec.Impl.Paging;

/// <summary>
/// Protection-key policy as a 32-bit mask (KVM update_pkru_bitmask). For an access with error-code
/// bits pfec, and with the RSVD position replaced by "user-mode address", the two bits at that offset
/// say which PKRU bits apply: bit 0 = AD, bit 1 = WD. ANDing with the key's PKRU pair gives the verdict
/// without any branches on access kind, CR0.WP or page ownership.
/// </summary>
internal static class PkruBitmask
{
    /// <summary>Offset bit standing for "the translation is a user-mode address".</summary>
    public const uint UserAddressBit = PageFaultErrorCode.ReservedBit;

    /// <summary>PKRU bits per key: AD (bit 2k) and WD (bit 2k+1).</summary>
    public const int PkruBitsPerKey = 2;
    public const uint AccessDisable = 1u << 0;
    public const uint WriteDisable = 1u << 1;

    /// <summary>SDM 4.6.2 rules: keys apply to data accesses to user-mode addresses.</summary>
    public static uint Create(bool cr0Wp)
    {
        uint mask = 0;
        for (uint index = 0; index < PermissionTable.Entries; index++)
        {
            uint pfec = index << 1;
            bool write = (pfec & PageFaultErrorCode.Write) != 0;
            bool user = (pfec & PageFaultErrorCode.User) != 0;
            bool fetch = (pfec & PageFaultErrorCode.InstructionFetch) != 0;
            bool userAddress = (pfec & UserAddressBit) != 0;

            bool checkKey = !fetch && userAddress;
            // WD stops user writes, and supervisor writes only when CR0.WP=1.
            bool checkWrite = checkKey && write && (user || cr0Wp);

            uint bits = (checkKey ? AccessDisable : 0) | (checkWrite ? WriteDisable : 0);
            mask |= bits << (int)pfec;
        }
        return mask;
    }
}
