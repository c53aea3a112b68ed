namespace MmuSpec.Impl.Paging;

/// <summary>Contiguous bit masks (KVM's rsvd_bits).</summary>
internal static class BitRange
{
    /// <summary>Bits <paramref name="high"/>:<paramref name="low"/> set; empty when high &lt; low.</summary>
    public static ulong Mask(int low, int high)
    {
        if (high < low)
            return 0;
        return (ulong.MaxValue >> (63 - high)) & (ulong.MaxValue << low);
    }
}
