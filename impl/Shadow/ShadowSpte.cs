using System.Runtime.CompilerServices;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// The 64-bit shadow PTE (spte), one of the 512 in a shadow page's native 4 KiB table.
/// <code>
///  63 .............. 12 | 11..10 | 9..6 |  5   |      4       |  3 2 1  |    0
/// [ host pfn / child  ] [  0    ] [pkey] [leaf] [spte writable] [ U W X ] [present]
/// </code>
/// <list type="bullet">
/// <item>A leaf (level 1 only) holds the host pfn in bits 51:12 (host frames are below 2^40), the guest's
/// combined rights in <see cref="AccessRights"/> layout at bits 3:1 (so the hit check gets them with one
/// shift and mask and feeds them straight to the walker's permission table), the protection key and the
/// MMU's own W bit (KVM's SPTE W).</item>
/// <item>A table entry holds the child's spte page address itself (page aligned, so the low 12 bits are free
/// for flags): following a link is one AND, no lookup, exactly as hardware follows a table pointer.</item>
/// </list>
/// Zero is "not present" so a freshly zeroed page is empty.
/// </summary>
internal static class ShadowSpte
{
    public const ulong Present = 1UL << 0;
    private const int RightsShift = 1;
    public const ulong Writable = 1UL << 4;
    public const ulong Leaf = 1UL << 5;
    private const int KeyShift = 6;
    private const uint KeyMask = 0xF;
    private const int PfnShift = 12;
    private const ulong PfnMask = (1UL << 40) - 1;
    private const ulong AddressMask = ~0xFFFUL;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeLeaf(ulong hostPfn, uint rights, uint key, bool writable) =>
        Present | Leaf | ((ulong)(rights & AccessRights.All) << RightsShift) | ((ulong)(key & KeyMask) << KeyShift)
        | (writable ? Writable : 0) | ((hostPfn & PfnMask) << PfnShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeTable(ShadowPage child) => (ulong)child.Address | Present;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPresent(ulong spte) => (spte & Present) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLeaf(ulong spte) => (spte & (Present | Leaf)) == (Present | Leaf);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsTable(ulong spte) => (spte & (Present | Leaf)) == Present;

    /// <summary>Leaf rights, <see cref="AccessRights"/> layout (Exec=1, Write=2, User=4; = KVM ACC_*).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Rights(ulong spte) => (uint)(spte >> RightsShift) & AccessRights.All;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Key(ulong spte) => (uint)(spte >> KeyShift) & KeyMask;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsWritable(ulong spte) => (spte & Writable) != 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong HostPfn(ulong spte) => (spte >> PfnShift) & PfnMask;

    /// <summary>The child page a table entry links.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ShadowPage Child(ulong spte) => ShadowPage.FromAddress((nint)(spte & AddressMask));
}
