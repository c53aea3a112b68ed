using System.Globalization;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>Numbers as kernel engineers write them: 0x-prefixed hex or decimal, '_' allowed between digits.</summary>
public static class Hex
{
    /// <summary>Parses "0x1000", "0X1000", "4096" or "0xffff_8880_0000_0000"; null when it is not a number.</summary>
    public static ulong? TryParse(string? text)
    {
        if (text is null) return null;
        string t = text.Trim().Replace("_", "", StringComparison.Ordinal);
        if (t.Length == 0 || t.StartsWith('-') || t.StartsWith('+')) return null;
        if (t.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return t.Length > 2 && ulong.TryParse(t.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong h) ? h : null;
        return ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out ulong d) ? d : null;
    }

    /// <summary>Parses a number or throws an <see cref="InputException"/> naming <paramref name="what"/>.</summary>
    public static ulong Parse(string text, string what) =>
        TryParse(text) ?? throw new InputException($"{what}: '{text}' is not a number (write hex as 0x1000, or decimal)");

    /// <summary>0x-prefixed lower-case hex, as the spec prints it.</summary>
    public static string Format(ulong value) => Bits.Hex(value);

    /// <summary>0x-prefixed lower-case hex padded with zeros to <paramref name="digits"/> digits (for aligned columns).</summary>
    public static string Padded(ulong value, int digits) => "0x" + value.ToString("x" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    /// <summary>Hex digits needed for an address of <paramref name="bits"/> bits.</summary>
    public static int DigitsFor(int bits) => (bits + 3) / 4;

    /// <summary>A byte count in the largest binary unit that divides it evenly-ish: "256 MiB", "4 KiB", "12345 bytes".</summary>
    public static string Size(ulong bytes)
    {
        string[] units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double v = bytes; int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? FormattableString.Invariant($"{bytes} bytes")
            : v == Math.Floor(v) ? FormattableString.Invariant($"{v:0} {units[u]}") : FormattableString.Invariant($"{v:0.0} {units[u]}");
    }
}
