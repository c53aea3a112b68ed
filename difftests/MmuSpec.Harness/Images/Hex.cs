using System.Globalization;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>
/// Numbers as kernel engineers write them. Registers and addresses are hex, with or without
/// <c>0x</c>, because that is how debuggers print them (QEMU's <c>info registers</c>: <c>CR0=80050033</c>):
/// reading a pasted <c>80050033</c> as decimal would silently walk another machine. Counts and
/// seeds are decimal unless <c>0x</c>-prefixed. <c>_</c> is allowed between digits in both.
/// </summary>
public static class Hex
{
    /// <summary>Parses "0x1000", "0X1000", "4096" (decimal) or "0xffff_8880_0000_0000"; null when it is not a number that fits in 64 bits.</summary>
    public static ulong? TryParse(string? text) => Read(text, bareIsHex: false, out ulong v) is null ? v : null;

    /// <summary>Parses a register or address: hex with or without 0x ("80050033", "0x1000", "ffff_8880_0000_0000"); null otherwise.</summary>
    public static ulong? TryParseHex(string? text) => Read(text, bareIsHex: true, out ulong v) is null ? v : null;

    /// <summary>A count or seed: decimal, or hex with 0x. Throws an <see cref="InputException"/> naming <paramref name="what"/>.</summary>
    public static ulong Parse(string text, string what) =>
        Read(text, bareIsHex: false, out ulong v) is { } problem ? throw new InputException($"{what}: {problem}") : v;

    /// <summary>A register or address: hex, 0x optional. Throws an <see cref="InputException"/> naming <paramref name="what"/>.</summary>
    public static ulong ParseHex(string text, string what) =>
        Read(text, bareIsHex: true, out ulong v) is { } problem ? throw new InputException($"{what}: {problem}") : v;

    /// <summary>
    /// Reads <paramref name="text"/> as a number: null on success, else what is wrong with it, in
    /// words fit for "--cr3: ..." (a number too wide is "larger than 64 bits", not "not a number").
    /// </summary>
    public static string? Read(string? text, bool bareIsHex, out ulong value) => Scan(text, bareIsHex, out value) switch
    {
        NumberScan.Ok => null,
        NumberScan.TooWide => $"'{text}' is larger than 64 bits",
        _ => bareIsHex
            ? $"'{text}' is not a hex number (registers and addresses are hex, 0x optional: 80050033, 0x1000)"
            : $"'{text}' is not a number (decimal, or hex as 0x1000)",
    };

    /// <summary>What reading <paramref name="text"/> as a number gives, for callers that word their own errors.</summary>
    public static NumberScan Scan(string? text, bool bareIsHex, out ulong value)
    {
        value = 0;
        string t = (text ?? "").Trim().Replace("_", "", StringComparison.Ordinal);
        bool prefixed = t.StartsWith("0x", StringComparison.OrdinalIgnoreCase);
        bool hex = prefixed || bareIsHex;
        string digits = prefixed ? t[2..] : t;
        if (digits.Length == 0 || !digits.All(hex ? char.IsAsciiHexDigit : char.IsAsciiDigit)) return NumberScan.NotANumber;
        bool ok = hex
            ? ulong.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value)
            : ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out value);
        return ok ? NumberScan.Ok : NumberScan.TooWide;
    }

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

/// <summary>The outcome of <see cref="Hex.Scan"/>: a number, not a number, or digits wider than 64 bits.</summary>
public enum NumberScan { Ok, NotANumber, TooWide }
