using System.CommandLine;
using MmuSpec.Harness.Images;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec walk</c>: explains one translation step by step (spec), or shows the impl's outcome and
/// A/D writes; with L1's EPT (a scenario's "ept", or <c>--eptp</c>) an L2 access through both dimensions; <c>--batch</c> walks one JSON scenario per line and answers one JSON line each.
/// </summary>
public static class WalkCommand
{
    public static Command Create()
    {
        var machine = new MachineOptions();
        var gva = Cli.HexNumber("--gva", "linear address to translate, hex (0x optional) (overrides the scenario's access)");
        var accessType = Cli.Choice("--access", "access type (fetch = exec = x)", "read", [.. ScenarioJson.AccessTypeWords.Select(w => w.Word)]);
        var user = Cli.Flag("--user", "a user-mode access (CPL 3)");
        var @implicit = Cli.Flag("--implicit", "an implicit supervisor-mode access (GDT/IDT/TSS...)");
        var engine = Cli.Choice("--engine", "which side walks: the spec (with steps) or the impl (outcome + A/D only)", "spec", "spec", "impl");
        var json = Cli.Flag("--json", "machine-readable output (docs/json-format.md)");
        var batch = Cli.Flag("--batch", "read one JSON scenario per line (stdin, or --scenario file.jsonl), write one JSON result per line");
        var eptp = Cli.HexNumber("--eptp", "with --image: the address space is L2's (CR3, mode) under L1's EPT with this EPTP, hex; the image is L1's memory (docs/nested-ept.md)");

        var command = new Command("walk", "Explain how one linear address translates, level by level.");
        machine.AddTo(command);
        foreach (var o in new Option[] { gva, accessType, user, @implicit, engine, json, batch, eptp }) command.Add(o);

        command.SetAction(p =>
        {
            bool useImpl = p.GetValue(engine)!.Equals("impl", StringComparison.OrdinalIgnoreCase);
            if (p.GetValue(batch))
            {
                foreach (var o in new Option[] { gva, accessType, user, @implicit, machine.Cr3, machine.Mode, machine.Cr0, machine.QemuPdptes, machine.Cpu, eptp })
                    if (p.Given(o)) throw new InputException($"{o.Name} cannot be combined with --batch: each line is a whole scenario");
                return Batch(p.GetValue(machine.Scenario), p.GetValue(machine.Image), useImpl);
            }

            if (useImpl && p.GetValue(machine.QemuPdptes))
                throw new InputException("--pdpte-as-qemu needs --engine spec: the impl loads the PDPTEs itself, by the SDM's rule");
            if (p.Given(eptp) && p.GetValue(machine.Scenario) is not null)
                throw new InputException("--eptp cannot be combined with --scenario: give the scenario an \"ept\" object (docs/json-format.md)");
            var scenario = machine.Build(p, out var image);
            using var imageScope = image;
            if (p.GetValue(eptp) is { } pointer)
                scenario = scenario.WithEpt(L1Ept.Create(scenario.Controls, new EptPointer(pointer), L1Ept.DefaultCaps(scenario.Controls), "--eptp"));
            scenario = WithAccessOverrides(scenario, p.GetValue(gva), p.Given(accessType) ? p.GetValue(accessType) : null,
                p.GetValue(user), p.GetValue(@implicit));
            if (scenario.Ept is not null)
            {
                if (useImpl) throw new InputException("--engine impl: the impl has no nested EPT walk yet; an L2 access is walked by the spec");
                var nested = machine.WithSource(p, () => NestedSpecWalk.Run(scenario));
                Console.WriteLine(p.GetValue(json) ? NestedWalkJson.ToJson(nested, indented: true) : NestedWalkText.Render(nested));
                return Cli.Ok;
            }
            var report = machine.WithSource(p, () => useImpl ? RunImpl(scenario, image) : SpecWalk.Run(scenario));
            Console.WriteLine(p.GetValue(json) ? WalkJson.ToJson(report, steps: true, indented: true) : WalkText.Render(report));
            return Cli.Ok;
        });
        return command;
    }

    static Scenario WithAccessOverrides(Scenario s, ulong? gva, string? type, bool user, bool @implicit)
    {
        if (user && @implicit) throw new InputException("--user and --implicit contradict each other: an access is user-mode or implicit supervisor-mode");
        if (gva is null && type is null && !user && !@implicit) return s;
        ulong address = gva ?? s.Access?.Gva ?? throw new InputException("--gva is required: the scenario has no access to modify");
        var t = type is null ? s.Access?.Type ?? AccessType.Read : ScenarioJson.ParseAccessType(type, "--access");
        var privilege = user ? Privilege.User : @implicit ? Privilege.ImplicitSupervisor
            : gva is not null || s.Access is null ? Privilege.Supervisor : s.Access.Privilege;
        return s.WithAccess(ScenarioJson.MakeAccess(address, t, privilege));
    }

    static WalkReport RunImpl(Scenario s, MappedImage? image)
    {
        if (image is null) return ImplWalk.Run(s);
        using var cow = CopyOnWriteImage.Open(image);
        return ImplWalk.Run(s, cow.Memory);
    }

    static int Batch(FileInfo? file, FileInfo? imageFile, bool useImpl)
    {
        using var reader = file is null ? Console.In : BatchWalk.OpenFile(file);
        using var image = imageFile is null ? null : MappedImage.Open(imageFile.ToString());
        using var cow = useImpl && image is not null ? CopyOnWriteImage.Open(image) : null;
        // The impl's native memory lives as long as the batch: allocated once, rewritten per line.
        using var walker = useImpl && image is null ? new ImplWalker(new NativePagePool()) : null;
        Func<Scenario, WalkReport> engine = !useImpl ? SpecWalk.Run
            : cow is null ? walker!.Run
            : s =>
            {
                var r = ImplWalk.Run(s, cow.Memory);
                cow.Restore(r.Changes, s.EntryBytes);     // every line starts from the file as it is
                return r;
            };
        var stdout = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = false };
        int failed = BatchWalk.Run(reader, stdout, engine, image);
        stdout.Flush();
        if (failed > 0)
        {
            Console.Error.WriteLine($"mmuspec: error: {failed} batch line{(failed == 1 ? "" : "s")} failed (see the \"error\" results)");
            return Cli.BadInput;
        }
        return Cli.Ok;
    }
}
