using System.CommandLine;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli;

/// <summary>
/// The options that describe an address space, shared by <c>walk</c> and <c>mappings</c>: a JSON
/// scenario, or a memory image with CR3 and the paging controls (a mode plus flags, or raw
/// registers, which take precedence).
/// </summary>
public sealed class MachineOptions
{
    public readonly Option<FileInfo?> Scenario = new("--scenario") { Description = "JSON scenario file (docs/json-format.md)", HelpName = "file.json" };
    public readonly Option<FileInfo?> Image = new("--image") { Description = "guest memory: a raw image (file offset = gpa, QEMU pmemsave) or an ELF core (QEMU dump-guest-memory; its QEMU note gives CR0/CR3/CR4/RFLAGS not given here)", HelpName = "file" };
    public readonly Option<ulong?> Cr3 = Cli.HexNumber("--cr3", "CR3, hex (0x optional; with --image)");
    public readonly Option<string?> Mode = new("--mode") { Description = "paging mode", HelpName = "bits32|pae|long4|long5" };
    public readonly Option<bool> Wp = Cli.Flag("--wp", "CR0.WP: supervisor writes honour R/W");
    public readonly Option<bool> Pse = Cli.Flag("--pse", "CR4.PSE: 4M pages in 32-bit paging");
    public readonly Option<bool> Smep = Cli.Flag("--smep", "CR4.SMEP");
    public readonly Option<bool> Smap = Cli.Flag("--smap", "CR4.SMAP");
    public readonly Option<bool> Pke = Cli.Flag("--pke", "CR4.PKE: protection keys (4/5-level paging)");
    public readonly Option<bool> Nxe = Cli.Flag("--nxe", "EFER.NXE: bit 63 is XD");
    public readonly Option<bool> Ac = Cli.Flag("--ac", "EFLAGS.AC: explicit supervisor accesses pass SMAP");
    public readonly Option<ulong?> Pkru = Cli.HexNumber("--pkru", "PKRU, hex (AD = bit 2k, WD = bit 2k+1 for key k)");
    public readonly Option<ulong?> MaxPhyAddr = Cli.Number("--maxphyaddr", "MAXPHYADDR in bits, decimal: 36..52 (default 46)", "bits");
    public readonly Option<ulong?> Cr0 = Cli.HexNumber("--cr0", "raw CR0, hex as debuggers print it (80050033 = 0x80050033); with --cr4/--efer decides mode and flags (overrides --mode and flags)");
    public readonly Option<ulong?> Cr4 = Cli.HexNumber("--cr4", "raw CR4, hex (needs --cr0, or an ELF core)");
    public readonly Option<ulong?> Efer = Cli.HexNumber("--efer", "raw IA32_EFER, hex (needs --cr0, or an ELF core: its note has no EFER)");
    public readonly Option<ulong?> Rflags = Cli.HexNumber("--rflags", "raw RFLAGS, hex, for AC (needs --cr0, or an ELF core)");

    public readonly Option<ulong?> Cpu = Cli.Number("--cpu", "ELF core: whose QEMU note gives the registers not given here (default vCPU 0)", "N");
    public readonly Option<bool> QemuPdptes = Cli.Flag("--pdpte-as-qemu",
        "PAE: ignore PDPTE bits 8:5 at MOV CR3 as QEMU TCG does (it sets A, bit 5, in PDPTEs it walked; the SDM reserves 8:5 and would #GP)");

    Option[] ControlOptions => [Cr3, Mode, Wp, Pse, Smep, Smap, Pke, Nxe, Ac, Pkru, MaxPhyAddr, Cr0, Cr4, Efer, Rflags, Cpu];

    public void AddTo(Command command)
    {
        command.Add(Scenario);
        command.Add(Image);
        foreach (var o in ControlOptions) command.Add(o);
        command.Add(QemuPdptes);
    }

    /// <summary>
    /// The address space the options describe. The image (if any) is opened and returned in
    /// <paramref name="image"/>; the caller disposes it.
    /// </summary>
    public Scenario Build(ParseResult p, out MappedImage? image)
    {
        var scenario = BuildAsGiven(p, out image);
        return p.GetValue(QemuPdptes) ? scenario.WithQemuPdptes() : scenario;
    }

    Scenario BuildAsGiven(ParseResult p, out MappedImage? image)
    {
        image = null;
        var scenarioFile = p.GetValue(Scenario);
        var imageFile = p.GetValue(Image);
        if (scenarioFile is not null)
        {
            foreach (var o in ControlOptions)
                if (p.Given(o))
                    throw new InputException($"{o.Name} cannot be combined with --scenario: the scenario sets the controls and CR3");
            string text = ReadScenario(scenarioFile);
            image = imageFile is null ? null : MappedImage.Open(imageFile.ToString());
            try { return ScenarioJson.Parse(text, image); }
            catch (InputException e) { image?.Dispose(); image = null; throw e.At(scenarioFile.ToString()); }
        }
        if (imageFile is null)
            throw new InputException("no address space: give --scenario FILE, or --image FILE with --cr3 and --mode (or raw --cr0/--cr4/--efer)");
        if (p.GetValue(Mode) is not null || p.GetValue(Cr0) is not null) Input(p).Build();   // a typo in the controls first, before the file

        image = MappedImage.Open(imageFile.ToString());
        try
        {
            if (p.Given(Cpu) && image.Core is not { Cpus.Count: > 0 })
                throw new InputException($"--cpu picks a vCPU's registers from an ELF core's QEMU note; '{imageFile}' {(image.Core is null ? "is raw memory, with no registers" : "has no QEMU note")}");
            int cpu = (int)Math.Min(p.GetValue(Cpu) ?? 0, int.MaxValue);
            var (input, cr3, source) = Input(p).WithDumpRegisters(p.GetValue(Cr3), image, cpu);
            if (source is not null) Cli.Note("registers " + source);
            var controls = input.Build();
            if (input.UsesRegisters && input.HasModeOrFlags)
                Cli.Note($"raw registers given: the mode and flags come from them ({controls}); --mode and flag options are ignored");
            return Harness.Images.Scenario.FromImage(controls, cr3, image, access: null);
        }
        catch { image.Dispose(); image = null; throw; }
    }

    ControlsInput Input(ParseResult p) => new()
    {
        Mode = p.GetValue(Mode),
        Wp = p.GetValue(Wp), Pse = p.GetValue(Pse), Smep = p.GetValue(Smep), Smap = p.GetValue(Smap),
        Pke = p.GetValue(Pke), Nxe = p.GetValue(Nxe), Ac = p.GetValue(Ac),
        Pkru = p.GetValue(Pkru), MaxPhyAddr = p.GetValue(MaxPhyAddr),
        Cr0 = p.GetValue(Cr0), Cr4 = p.GetValue(Cr4), Efer = p.GetValue(Efer), Rflags = p.GetValue(Rflags),
        Names = n => "--" + n,
    };

    /// <summary>
    /// Runs <paramref name="body"/>, naming the scenario file in front of any bad-input error it
    /// raises (a CR3 that cannot be loaded is as much the file's fault as a typo in it).
    /// </summary>
    public T WithSource<T>(ParseResult p, Func<T> body)
    {
        var file = p.GetValue(Scenario);
        try { return body(); }
        catch (InputException e) when (file is not null && !e.Message.StartsWith(file.ToString(), StringComparison.Ordinal))
        {
            throw e.At(file.ToString());
        }
    }

    public static string ReadScenario(FileInfo file)
    {
        if (Directory.Exists(file.FullName)) throw new InputException($"scenario '{file}' is a directory");
        if (!file.Exists) throw new InputException($"scenario '{file}' does not exist");
        try { return File.ReadAllText(file.FullName); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"cannot read scenario '{file}': {e.Message}");
        }
    }
}
