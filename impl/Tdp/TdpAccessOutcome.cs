using System.Runtime.CompilerServices;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// Result of <see cref="ITdpVm.Access"/>: 16 bytes, all integer, returned in registers without touching
/// the heap. For <see cref="TdpAccessStatus.MmioExit"/> and <see cref="TdpAccessStatus.Rejected"/>,
/// <see cref="Hpa"/>, <see cref="PageShift"/> and <see cref="Faulted"/> are zero/false (the gpa of an
/// MMIO exit is the caller's own argument).
/// </summary>
public readonly struct TdpAccessOutcome : IEquatable<TdpAccessOutcome>
{
    private const int PageShiftShift = 8;
    private const ulong FaultedBit = 1UL << 16;

    private readonly ulong _hpa;

    // Status (bits 7:0), page shift (15:8) and faulted (16) in one word: two 8-byte fields, each a whole
    // return register, so the JIT keeps the outcome in registers where the old four fields (three of them
    // bytes) were stored separately and re-read as one word (a store-forwarding stall on every non-inlined return).
    private readonly ulong _bits;

    public TdpAccessOutcome(TdpAccessStatus status, ulong hpa, byte pageShift, bool faulted)
        : this(hpa, (byte)status | ((ulong)pageShift << PageShiftShift) | (faulted ? FaultedBit : 0))
    {
    }

    private TdpAccessOutcome(ulong hpa, ulong bits)
    {
        _hpa = hpa;
        _bits = bits;
    }

    public TdpAccessStatus Status => (TdpAccessStatus)(byte)_bits;

    /// <summary>Host physical address of the accessed byte (Mapped only).</summary>
    public ulong Hpa => _hpa;

    /// <summary>log2 of the size of the leaf that served the access: 12, 21 or 30 (Mapped only).</summary>
    public byte PageShift => (byte)(_bits >> PageShiftShift);

    /// <summary>The access faulted: a leaf was installed, made writable, or replaced (Mapped only).</summary>
    public bool Faulted => (_bits & FaultedBit) != 0;

    public static TdpAccessOutcome MmioExit => new(TdpAccessStatus.MmioExit, 0, 0, false);

    public static TdpAccessOutcome Rejected => new(TdpAccessStatus.Rejected, 0, 0, false);

    public static TdpAccessOutcome Retry => new(TdpAccessStatus.Retry, 0, 0, false);

    // Inlined even where the caller's budget is spent (the benchmark loop, with Access inlined): a call on the
    // hit path lengthens each access by a call and return, fewer accesses fit the reorder buffer, and fewer
    // of their cache misses overlap.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static TdpAccessOutcome Mapped(ulong hpa, int pageShift, bool faulted) =>
        new(hpa, (ulong)TdpAccessStatus.Mapped | ((ulong)(byte)pageShift << PageShiftShift) | (faulted ? FaultedBit : 0));

    // The packing is one-to-one: equal words are equal fields.
    public bool Equals(TdpAccessOutcome other) => _hpa == other._hpa && _bits == other._bits;

    public override bool Equals(object? obj) => obj is TdpAccessOutcome other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(_hpa, Status, PageShift, Faulted);

    public static bool operator ==(TdpAccessOutcome left, TdpAccessOutcome right) => left.Equals(right);

    public static bool operator !=(TdpAccessOutcome left, TdpAccessOutcome right) => !left.Equals(right);

    public override string ToString() => Status switch
    {
        TdpAccessStatus.Mapped => $"Mapped(hpa=0x{_hpa:X}, size=2^{PageShift}, faulted={Faulted})",
        _ => Status.ToString(),
    };
}
