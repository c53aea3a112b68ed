using System.Runtime.CompilerServices;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Shadow;

/// <summary>
/// The shadow fault path's observer of the guest walk (<see cref="GuestVcpu.Observe{TObserver}"/>): the gpa
/// and value of every entry read (walk order, for the A/D write-back the MMU does itself, through the memslots:
/// an entry read with the bit already set needs no pass, as in the guest walker), and per
/// level the entry used and the rights folded through it (the child key's guest table gfn and access).
/// A struct on the caller's stack: no allocation, and no second walk.
/// </summary>
internal struct GuestWalkRecord : IWalkObserver
{
    private const int Slots = WalkTrace.MaxEntries + 1; // levels 1..5 index directly

    private Words _gpas;
    private Words _values;
    private Words _ptes;
    private RightsByLevel _rights;
    private int _count;

    public static bool WritesAccessedDirty => false;

    /// <summary>Entries read from memory (all of them used when the walk translated).</summary>
    public readonly int Count => _count;

    public readonly ulong EntryGpa(int i) => _gpas[i];

    /// <summary>Entry <paramref name="i"/> as the walk read it.</summary>
    public readonly ulong EntryValue(int i) => _values[i];

    /// <summary>The entry the walk used at <paramref name="level"/>.</summary>
    public readonly ulong Pte(int level) => _ptes[level];

    /// <summary>Rights (AccessRights/ACC layout) folded through <paramref name="level"/>.</summary>
    public readonly uint RightsThrough(int level) => _rights[level];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EntryRead(ulong gpa, ulong pte)
    {
        _gpas[_count] = gpa;
        _values[_count++] = pte;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void EntryUnbacked(ulong gpa) { }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void EntryUsed(int level, ulong pte, uint rightsSoFar)
    {
        _ptes[level] = pte;
        _rights[level] = rightsSoFar;
    }

    [InlineArray(Slots)]
    private struct Words
    {
        private ulong _element0;
    }

    [InlineArray(Slots)]
    private struct RightsByLevel
    {
        private uint _element0;
    }
}

/// <summary>
/// The shadow pages a fault's descent passed, by level (1..5; none where the descent stopped above): the fill
/// follows them instead of descending again. A struct on the caller's stack.
/// </summary>
[InlineArray(WalkTrace.MaxEntries + 1)]
internal struct ShadowPath
{
    private ShadowPage _element0;
}
