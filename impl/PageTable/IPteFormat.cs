namespace MmuSpec.Impl.PageTable;

/// <summary>
/// An architecture's page-table entry format: the only code that knows bit positions. Implemented by
/// structs and used as a constrained type parameter (<c>where TFormat : struct, IPteFormat</c>), so the
/// JIT compiles one copy of the walker per format and inlines every hook: the abstraction costs nothing.
/// Entries hold host physical addresses; here "host physical" is the table's address in this process.
/// </summary>
public interface IPteFormat
{
    /// <summary>Deepest root level the format can build (how many levels its index space allows).</summary>
    static abstract int MaxRootLevel { get; }

    /// <summary>Width of the output address an entry can hold; host frames must be below 2^(bits - 12).</summary>
    static abstract int OutputAddressBits { get; }

    /// <summary>Whether a leaf may sit at <paramref name="level"/> (1..3 for both formats: 4 KiB, 2 MiB, 1 GiB).</summary>
    static abstract bool LeafAllowed(int level);

    /// <summary>An entry pointing at a child table at host address <paramref name="tableHpa"/> (4 KiB aligned).</summary>
    static abstract ulong MakeTable(ulong tableHpa);

    /// <summary>A leaf mapping host frame <paramref name="hostPfn"/> at <paramref name="level"/>: readable and
    /// executable always, writable as asked. The frame must be aligned to the leaf's size.</summary>
    static abstract ulong MakeLeaf(ulong hostPfn, int level, bool writable);

    static abstract bool IsPresent(ulong pte);

    /// <summary>Whether a present entry at <paramref name="level"/> is a leaf (otherwise it points at a table).</summary>
    static abstract bool IsLeaf(ulong pte, int level);

    /// <summary>First host frame a leaf maps.</summary>
    static abstract ulong LeafPfn(ulong pte);

    /// <summary>Host address of the table a non-leaf entry points at.</summary>
    static abstract ulong TableAddress(ulong pte);

    static abstract bool IsWritable(ulong pte);

    /// <summary>The leaf with its write permission set or cleared, every other bit unchanged.</summary>
    static abstract ulong WithWritable(ulong pte, bool writable);

    /// <summary>
    /// A non-present value no table or leaf ever holds, written while an entry is being replaced under a
    /// shared lock (KVM's FROZEN_SPTE, formerly REMOVED_SPTE): a concurrent fault that reads it retries,
    /// and a compare-and-exchange against any other value fails. Zero is "absent", so it is never zero.
    /// </summary>
    static abstract ulong FrozenEntry { get; }

    /// <summary>
    /// A leaf's accessed flag (docs/tdp-model.md, "Aging"): EPT bit 8, stage-2 AF bit 10. It may share a bit
    /// with <see cref="FrozenEntry"/>, which is never present: aging touches present leaves only.
    /// </summary>
    static abstract ulong AccessedBit { get; }

    /// <summary>A leaf's dirty flag: EPT bit 9; 0 for a format whose MMU keeps none (stage-2: KVM does not use DBM).</summary>
    static abstract ulong DirtyBit { get; }

    /// <summary>
    /// Software bit of a leaf, ignored by the hardware: the host maps the frame writable (the slot is not
    /// read-only). KVM's shadow_host_writable_mask (spte.h).
    /// </summary>
    static abstract ulong HostWritable { get; }

    /// <summary>
    /// Software bit of a leaf, ignored by the hardware: the MMU may make the leaf writable without mmu_lock
    /// (nothing write-protects it for write tracking). KVM's shadow_mmu_writable_mask (spte.h); the fast page
    /// fault sets W only where this is set.
    /// </summary>
    static abstract ulong MmuWritable { get; }
}
