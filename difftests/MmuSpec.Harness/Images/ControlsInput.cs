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

    /// <summary>
    /// Fills what the user did not give from the registers an ELF core carries (QEMU's note for
    /// vCPU <paramref name="cpu"/>): CR3 unless given; CR0, CR4 and RFLAGS unless a mode or CR0 was
    /// given. The note holds no EFER, so with CR4.PAE set EFER must come from the user (it decides
    /// long mode and NXE). Returns the controls input, CR3 and a line saying where each came from.
    /// </summary>
    public (ControlsInput Controls, ulong Cr3, string? Source) WithDumpRegisters(ulong? cr3, MappedImage image, int cpu = 0)
    {
        if (image.Core is not { } core || core.Cpus.Count == 0)
        {
            if (cr3 is null)
                throw new InputException(image.Core is null
                    ? $"{Names("cr3")} is required with a raw image (it holds no registers)"
                    : $"{Names("cr3")} is required: the ELF core '{image.Path}' has no QEMU note with the registers");
            return (this, cr3.Value, null);
        }
        if (cpu < 0 || cpu >= core.Cpus.Count)
            throw new InputException($"{Names("cpu")} {cpu}: the ELF core has QEMU notes for {core.Cpus.Count} vCPU{(core.Cpus.Count == 1 ? "" : "s")} (0..{core.Cpus.Count - 1})");
        var note = core.Cpus[cpu];
        var taken = new List<string>();
        var input = this;
        if (cr3 is null) taken.Add($"CR3={Hex.Format(note.Cr3)}");
        if (Mode is null && Cr0 is null)
        {
            const ulong Cr4Pae = 1UL << 5;
            ulong cr4 = Cr4 ?? note.Cr4;
            if (Efer is null && (cr4 & Cr4Pae) != 0)
                throw new InputException($"the ELF core's QEMU note holds CR0, CR3, CR4 and RFLAGS but not EFER, which decides long mode and NXE with CR4.PAE set: give {Names("efer")} (QEMU's info registers prints EFER=...)");
            input = this with { Cr0 = note.Cr0, Cr4 = cr4, Rflags = Rflags ?? note.Rflags, Efer = Efer ?? 0 };
            taken.Add($"CR0={Hex.Format(note.Cr0)}");
            if (Cr4 is null) taken.Add($"CR4={Hex.Format(note.Cr4)}");
            if (Rflags is null) taken.Add($"RFLAGS={Hex.Format(note.Rflags)}");
        }
        string? source = taken.Count == 0 ? null
            : $"from the ELF core's QEMU note for vCPU {cpu}{(core.Cpus.Count > 1 ? $" of {core.Cpus.Count}" : "")}: {string.Join(' ', taken)}"
              + (input.Cr0 is not null && Cr0 is null && Efer is not null ? $"; EFER={Hex.Format(Efer.Value)} from {Names("efer")}" : "");
        return (input, cr3 ?? note.Cr3, source);
    }

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
