namespace MmuSpec.Impl.Memory;

/// <summary>Public description of one memslot: first guest frame number and length in 4 KiB pages.</summary>
public readonly record struct MemslotInfo(ulong BaseGfn, ulong Pages);
