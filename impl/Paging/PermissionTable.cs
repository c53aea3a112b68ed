using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// The page-rights policy as a lookup table (KVM update_permission_bitmask / permission_fault):
/// byte [pfec &gt;&gt; 1] has bit r set when an access with error-code bits pfec (W, U, I/D) faults on a
/// translation with rights r (<see cref="AccessRights"/> UWX). The RSVD position of the index, never part
/// of an access's own error code, carries "SMAP lifted by EFLAGS.AC" (KVM's SMAP/AC trick), so the whole
/// SDM 4.6 rule set becomes one load and one shift per access.
/// </summary>
[InlineArray(Entries)]
internal struct PermissionTable
{
    /// <summary>Index bits: W, U, RSVD (=AC lifts SMAP), I/D.</summary>
    public const int Entries = 16;

    private byte _element0;

    /// <summary>Error-code bits of the access that feed the index.</summary>
    public const uint AccessBits = PageFaultErrorCode.Write | PageFaultErrorCode.User | PageFaultErrorCode.InstructionFetch;

    /// <summary>Index bit meaning "explicit supervisor access with EFLAGS.AC=1": SMAP does not apply.</summary>
    public const uint SmapLiftedBit = PageFaultErrorCode.ReservedBit;

    /// <param name="noExecute">XD is honoured (64-bit entries with EFER.NXE=1).</param>
    public static PermissionTable Create(bool cr0Wp, bool smep, bool smap, bool noExecute)
    {
        PermissionTable table = default;
        for (int index = 0; index < Entries; index++)
        {
            uint pfec = (uint)index << 1;
            bool write = (pfec & PageFaultErrorCode.Write) != 0;
            bool user = (pfec & PageFaultErrorCode.User) != 0;
            bool fetch = (pfec & PageFaultErrorCode.InstructionFetch) != 0;
            bool smapLifted = (pfec & SmapLiftedBit) != 0;

            byte faults = 0;
            for (uint rights = 0; rights < AccessRights.Combinations; rights++)
            {
                bool pageUser = (rights & AccessRights.User) != 0;
                bool pageWritable = (rights & AccessRights.Write) != 0;
                bool pageExec = (rights & AccessRights.Exec) != 0;

                // SDM 4.6.1: user accesses need U/S everywhere.
                bool fault = user && !pageUser;
                // Writes need R/W unless a supervisor write with CR0.WP=0.
                fault |= write && !pageWritable && (user || cr0Wp);
                // XD pages are not executable (only meaningful with NXE and 64-bit entries).
                fault |= fetch && noExecute && !pageExec;
                // SMEP: no supervisor fetches from user-mode addresses.
                fault |= smep && fetch && !user && pageUser;
                // SMAP: no supervisor data accesses to user-mode addresses unless AC lifts it.
                fault |= smap && !fetch && !user && pageUser && !smapLifted;

                if (fault)
                    faults |= (byte)(1u << (int)rights);
            }
            table[index] = faults;
        }
        return table;
    }

    /// <param name="pfec">Access error-code bits, plus <see cref="SmapLiftedBit"/> when AC lifts SMAP.</param>
    /// <param name="rights">Translation rights (<see cref="AccessRights"/>).</param>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Denies(uint pfec, uint rights) =>
        ((this[(int)(pfec >> 1) & (Entries - 1)] >> (int)rights) & 1) != 0;
}
