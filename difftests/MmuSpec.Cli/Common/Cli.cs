using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using MmuSpec.Harness.Images;

namespace MmuSpec.Cli;

/// <summary>Exit codes, one-line errors and option builders shared by the commands.</summary>
public static class Cli
{
    public const int Ok = 0, Diverged = 1, BadInput = 2, InternalError = 3;

    /// <summary>Prints "mmuspec: error: ..." on one line and returns <see cref="BadInput"/>.</summary>
    public static int Fail(string message)
    {
        // Stdout first, so the error comes after what was printed; a stdout that cannot take it (a full
        // disk: the error being reported) must not turn the one-line error into an internal error.
        try { Console.Out.Flush(); }
        catch (IOException) { }
        Console.Error.WriteLine($"mmuspec: error: {OneLine(message)}");
        return BadInput;
    }

    /// <summary>A remark on stderr that does not change the outcome.</summary>
    public static void Note(string message) => Console.Error.WriteLine($"mmuspec: note: {OneLine(message)}");

    /// <summary>A warning on stderr: the output is complete but probably not what the user meant.</summary>
    public static void Warn(string message) => Console.Error.WriteLine($"mmuspec: warning: {OneLine(message)}");

    static string OneLine(string s) => s.ReplaceLineEndings(" ");

    /// <summary>An option taking a count or seed: decimal, or hex with 0x (a bare number is decimal).</summary>
    public static Option<ulong?> Number(string name, string description, string helpName = "N") => NumberOption(name, description, helpName, bareIsHex: false);

    /// <summary>
    /// An option taking a register or an address: hex, 0x optional, as debuggers print them
    /// (QEMU's <c>info registers</c> shows <c>CR0=80050033</c>); a bare number is never decimal.
    /// </summary>
    public static Option<ulong?> HexNumber(string name, string description, string helpName = "hex") => NumberOption(name, description, helpName, bareIsHex: true);

    static Option<ulong?> NumberOption(string name, string description, string helpName, bool bareIsHex) => new(name)
    {
        Description = description,
        HelpName = helpName,
        CustomParser = r =>
        {
            string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            if (Hex.Read(text, bareIsHex, out ulong v) is { } problem) { r.AddError($"{name}: {problem}"); return null; }
            return v;
        },
    };

    /// <summary>A yes/no switch.</summary>
    public static Option<bool> Flag(string name, string description, params string[] aliases) => new(name, aliases) { Description = description };

    /// <summary>An option restricted to a few words, with the list in the error.</summary>
    public static Option<string> Choice(string name, string description, string defaultValue, params string[] choices)
    {
        var o = new Option<string>(name) { Description = description, DefaultValueFactory = _ => defaultValue, HelpName = string.Join('|', choices) };
        o.Validators.Add(r =>
        {
            string? v = r.Tokens.Count > 0 ? r.Tokens[0].Value : null;
            if (v is not null && !choices.Contains(v, StringComparer.OrdinalIgnoreCase))
                r.AddError($"{name}: unknown value '{v}' (expected {string.Join(", ", choices)})");
        });
        return o;
    }

    /// <summary>"20", "20s", "10m", "1h", "1h30m", "1.5m" as a time span.</summary>
    public static TimeSpan? ParseDuration(string text)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t.Length == 0) return null;
        if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double plain))
            return plain > 0 ? TimeSpan.FromSeconds(plain) : null;
        double total = 0;
        int i = 0;
        while (i < t.Length)
        {
            int start = i;
            while (i < t.Length && (char.IsDigit(t[i]) || t[i] == '.')) i++;
            if (start == i || !double.TryParse(t[start..i], NumberStyles.Float, CultureInfo.InvariantCulture, out double n)) return null;
            int unitStart = i;
            while (i < t.Length && char.IsLetter(t[i])) i++;
            total += t[unitStart..i] switch
            {
                "ms" => n / 1000,
                "s" or "sec" => n,
                "m" or "min" => n * 60,
                "h" => n * 3600,
                _ => double.NaN,
            };
        }
        return double.IsNaN(total) || total <= 0 ? null : TimeSpan.FromSeconds(total);
    }

    public static Option<TimeSpan?> Duration(string name, string description, params string[] aliases) => new(name, aliases)
    {
        Description = description,
        HelpName = "duration",
        CustomParser = r =>
        {
            string text = r.Tokens.Count > 0 ? r.Tokens[0].Value : "";
            var d = ParseDuration(text);
            if (d is null) r.AddError($"{name}: '{text}' is not a duration (seconds, or like 90s, 10m, 1h30m)");
            return d;
        },
    };

    /// <summary>Whether the user typed the option (as opposed to its default applying).</summary>
    public static bool Given(this ParseResult p, Option o) => p.GetResult(o) is OptionResult { Implicit: false };
}
