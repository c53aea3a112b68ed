using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// The entries read by one walk (their host addresses), kept so the A/D pass needs no second slot lookup.
/// An inline array on the stack: no allocation.
/// </summary>
[InlineArray(MaxLevels)]
internal struct WalkedEntries
{
    public const int MaxLevels = 5;

    private PagingEntry _element0;
}
