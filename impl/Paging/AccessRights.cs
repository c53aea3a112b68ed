using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// Rights of a translation in KVM's ACC_* layout (UWX in bits 2:0). Exec takes the place of the
/// present bit and User/Write sit exactly on the entry's U/S and R/W bits, so the walk derives
/// them from an entry with one mask and one XOR (KVM's gpte_access trick).
/// </summary>
internal static class AccessRights
{
    public const uint Exec = 1u << 0;
    public const uint Write = 1u << 1;
    public const uint User = 1u << 2;
    public const uint All = Exec | Write | User;

    /// <summary>Number of distinct UWX combinations: one bit of a permission byte each.</summary>
    public const int Combinations = 8;

    /// <summary>
    /// The rights one entry grants (KVM gpte_access): P sits where Exec does and is known to be 1, so XOR
    /// with XD yields "executable"; U and W are the entry's own bits. 4-byte entries (read zero-extended)
    /// have no XD. A path's rights are the AND of its entries'.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint OfEntry(ulong pte) => ((uint)pte & All) ^ (uint)(pte >> PagingEntryBits.NoExecuteShift);
}
