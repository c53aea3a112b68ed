namespace MmuSpec.Spec.Paging;

/// <summary>The decision on a complete translation: may the access proceed, and if not, why.</summary>
/// <param name="PageRightsAllow">U/S, R/W, XD, WP, SMEP and SMAP allow the access.</param>
/// <param name="ProtectionKeyDenies">PKRU denies the access (sets PK in the error code).</param>
public sealed record RightsVerdict(bool PageRightsAllow, bool ProtectionKeyDenies, string Rule)
{
    public bool Allowed => PageRightsAllow && !ProtectionKeyDenies;
}

/// <summary>
/// Access rights, SDM Vol. 3 §4.6. Checked only after a complete translation: a not-present or
/// reserved-bit fault is reported before rights are looked at.
/// </summary>
public static class AccessRights
{
    /// <summary>Decides whether <paramref name="access"/> may use a translation with <paramref name="rights"/>.</summary>
    public static RightsVerdict Check(PagingControls c, Access access, TranslationRights rights)
    {
        bool userAddress = rights.User;   // a user-mode address: U/S=1 at every level (§4.6)
        bool user = access.IsUserMode;

        // §4.6.1: with CR4.SMAP=1, a supervisor-mode data access to a user-mode address is allowed
        // only if it is explicit and EFLAGS.AC=1; implicit supervisor accesses cannot override it.
        bool smapAllows = !c.Cr4Smap || (c.EflagsAc && access.Privilege == Privilege.Supervisor);

        (bool allow, string rule) = access.Type switch
        {
            AccessType.Read when user =>
                (userAddress, userAddress ? "user read of a user-mode address" : "user read of a supervisor-mode address (U/S=0 at some level)"),
            AccessType.Read =>
                (!userAddress || smapAllows, !userAddress ? "supervisor read of a supervisor-mode address"
                    : smapAllows ? "supervisor read of a user-mode address (SMAP off or overridden by EFLAGS.AC)"
                    : "SMAP: supervisor read of a user-mode address"),
            AccessType.Write when user =>
                (userAddress && rights.Writable, !userAddress ? "user write to a supervisor-mode address"
                    : rights.Writable ? "user write to a writable user-mode address"
                    : "user write to a read-only address (R/W=0 at some level)"),
            AccessType.Write => SupervisorWrite(c, userAddress, smapAllows, rights.Writable),
            AccessType.Fetch => Fetch(c, user, userAddress, rights.NoExecute),
            _ => throw new ArgumentOutOfRangeException(nameof(access)),
        };

        return new RightsVerdict(allow, ProtectionKeyDenies(c, access, rights), rule);
    }

    static (bool, string) SupervisorWrite(PagingControls c, bool userAddress, bool smapAllows, bool writable)
    {
        if (userAddress && !smapAllows) return (false, "SMAP: supervisor write to a user-mode address");
        // §4.6.1: CR0.WP=0 lets supervisor writes ignore R/W; with WP=1 they need R/W=1 everywhere.
        if (!c.Cr0Wp) return (true, "supervisor write with CR0.WP=0 ignores R/W");
        return writable ? (true, "supervisor write to a writable address")
                        : (false, "CR0.WP=1: supervisor write to a read-only address");
    }

    static (bool, string) Fetch(PagingControls c, bool user, bool userAddress, bool noExecute)
    {
        // §4.6.1: XD applies to every fetch (NoExecute already accounts for EFER.NXE and the mode).
        if (noExecute) return (false, "fetch from an execute-disabled address (XD=1 at some level)");
        if (user) return userAddress ? (true, "user fetch from a user-mode address")
                                     : (false, "user fetch from a supervisor-mode address");
        if (userAddress && c.Cr4Smep) return (false, "SMEP: supervisor fetch from a user-mode address");
        return (true, "supervisor fetch");
    }

    /// <summary>
    /// Protection keys (§4.6.2): with CR4.PKE=1 in IA-32e paging, data accesses to user-mode
    /// addresses consult PKRU for the leaf's key k: AD (bit 2k) denies every data access; WD
    /// (bit 2k+1) denies user-mode writes, and supervisor-mode writes when CR0.WP=1. Fetches are
    /// never checked. The key is judged on its own: PK is reported even when page rights also deny
    /// (as KVM's permission_fault does).
    /// </summary>
    public static bool ProtectionKeyDenies(PagingControls c, Access access, TranslationRights rights)
    {
        if (!c.Cr4Pke || !c.Mode.IsLongMode() || !rights.User || access.Type == AccessType.Fetch) return false;
        bool ad = Bits.Test(c.Pkru, 2 * rights.ProtectionKey);
        bool wd = Bits.Test(c.Pkru, 2 * rights.ProtectionKey + 1);
        bool write = access.Type == AccessType.Write;
        return ad || (wd && write && (access.IsUserMode || c.Cr0Wp));
    }

    /// <summary>
    /// The #PF error code (§4.7). P distinguishes not-present from every other fault; I/D is
    /// reported only when CR4.SMEP=1, or with PAE/IA-32e paging and EFER.NXE=1.
    /// </summary>
    public static PageFaultErrorCode ErrorCode(PagingControls c, Access access, bool present, bool reserved, bool protectionKey)
    {
        var code = PageFaultErrorCode.None;
        if (present) code |= PageFaultErrorCode.Present;
        if (access.Type == AccessType.Write) code |= PageFaultErrorCode.Write;
        if (access.IsUserMode) code |= PageFaultErrorCode.User;
        if (reserved) code |= PageFaultErrorCode.ReservedBit;
        bool reportsFetch = c.Cr4Smep || (c.Mode != PagingMode.Bits32 && c.EferNxe);
        if (access.Type == AccessType.Fetch && reportsFetch) code |= PageFaultErrorCode.InstructionFetch;
        if (protectionKey) code |= PageFaultErrorCode.ProtectionKey;
        return code;
    }
}
