namespace MmuSpec.Spec.Paging;

/// <summary>Small bit helpers shared by the paging rules, so each rule reads as the SDM writes it.</summary>
public static class Bits
{
    /// <summary>A mask with bits <paramref name="high"/>:<paramref name="low"/> set (inclusive), empty when high &lt; low.</summary>
    public static ulong Range(int high, int low)
    {
        if (high < low) return 0;
        ulong width = (ulong)(high - low + 1);
        ulong ones = width >= 64 ? ulong.MaxValue : (1UL << (int)width) - 1;
        return ones << low;
    }

    /// <summary>Bit <paramref name="n"/> of <paramref name="value"/>.</summary>
    public static bool Test(ulong value, int n) => ((value >> n) & 1) != 0;

    /// <summary>Hex as kernel engineers print it: 0x-prefixed, lower case.</summary>
    public static string Hex(ulong value) => "0x" + value.ToString("x");
}
