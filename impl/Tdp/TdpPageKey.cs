namespace MmuSpec.Impl.Tdp;

/// <summary>
/// A table page's identity: the first frame it covers (shared bit removed) and its role (level, and
/// whether it belongs to the mirror root). Pages are compared by key, never by host address.
/// </summary>
public readonly record struct TdpPageKey(ulong Gfn, int Level, bool Mirror)
{
    public override string ToString() => $"(gfn=0x{Gfn:X}, L{Level}{(Mirror ? ", mirror" : "")})";
}
