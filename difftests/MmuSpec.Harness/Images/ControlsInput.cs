using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>
/// The paging controls as a user gives them: a mode name plus flags, or raw register values as a
/// debugger prints them (which take precedence: they decide the mode and every flag they hold).
/// Shared by JSON scenarios and command-line options; <see cref="Names"/> says how to name a field
/// in an error ("cr0" in JSON, "--cr0" on the command line).
/// </summary>
public sealed record ControlsInput
{
    public string? Mode { get; init; }
    public bool Wp { get; init; }
    public bool Pse { get; init; }
    public bool Smep { get; init; }
    public bool Smap { get; init; }
    public bool Pke { get; init; }
    public bool Nxe { get; init; }
    public bool Ac { get; init; }
    public ulong? Pkru { get; init; }
    public ulong? MaxPhyAddr { get; init; }
    public ulong? Cr0 { get; init; }
    public ulong? Cr4 { get; init; }
    public ulong? Efer { get; init; }
    public ulong? Rflags { get; init; }

    /// <summary>Field name as the user wrote it: identity for JSON, "--" prefix for the command line.</summary>
    public Func<string, string> Names { get; init; } = n => n;

    /// <summary>Whether raw registers decide the controls (and the mode and flags, if also given, are ignored).</summary>
    public bool UsesRegisters => Cr0 is not null;

    /// <summary>Whether a mode or a flag was given that raw registers override.</summary>
    public bool HasModeOrFlags => Mode is not null || Wp || Pse || Smep || Smap || Pke || Nxe || Ac;

    public PagingControls Build()
    {
        int maxPhyAddr = 46;
        if (MaxPhyAddr is { } m)
        {
            if (m is < PagingControls.MinMaxPhyAddr or > PagingControls.MaxMaxPhyAddr)
                throw new InputException($"{Names("maxphyaddr")} {m} is out of range ({PagingControls.MinMaxPhyAddr}..{PagingControls.MaxMaxPhyAddr})");
            maxPhyAddr = (int)m;
        }
        uint pkru = 0;
        if (Pkru is { } p)
        {
            if (p > uint.MaxValue) throw new InputException($"{Names("pkru")} {Hex.Format(p)} does not fit in 32 bits");
            pkru = (uint)p;
        }

        if (Cr0 is { } cr0)
        {
            try
            {
                return PagingControls.FromRegisters(cr0, Cr4 ?? 0, Efer ?? 0, Rflags ?? 0, pkru, maxPhyAddr);
            }
            catch (ArgumentException e)
            {
                throw new InputException(Messages.Of(e));
            }
        }
        foreach (var (name, value) in new[] { ("cr4", Cr4), ("efer", Efer), ("rflags", Rflags) })
            if (value is not null)
                throw new InputException($"{Names(name)} needs {Names("cr0")} as well: raw registers decode the mode from CR0, CR4 and EFER");
        if (Mode is null)
            throw new InputException($"no paging mode: give {Names("mode")} (bits32, pae, long4 or long5) or raw registers {Names("cr0")}/{Names("cr4")}/{Names("efer")}");

        PagingMode mode;
        try { mode = PagingModes.Parse(Mode); }
        catch (FormatException e) { throw new InputException($"{Names("mode")}: {e.Message}"); }
        return new PagingControls(mode, cr0Wp: Wp, cr4Pse: Pse, cr4Smep: Smep, cr4Smap: Smap, cr4Pke: Pke,
            eferNxe: Nxe, eflagsAc: Ac, pkru: pkru, maxPhyAddr: maxPhyAddr);
    }
}

/// <summary>Exception messages fit for one line.</summary>
public static class Messages
{
    /// <summary>The message without .NET's " (Parameter 'x')" suffix or an "Actual value was" line.</summary>
    public static string Of(Exception e)
    {
        string m = e.Message;
        if (e is ArgumentException { ParamName: { } p }) m = m.Replace($" (Parameter '{p}')", "", StringComparison.Ordinal);
        int nl = m.IndexOfAny(['\r', '\n']);
        return (nl >= 0 ? m[..nl] : m).Trim();
    }
}
