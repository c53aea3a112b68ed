using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec mappings</c>: every present leaf translation of an address space, one line per leaf
/// entry (nothing coalesced), like a debugger's page-table dump.
/// </summary>
public static class MappingsCommand
{
    public static Command Create()
    {
        var machine = new MachineOptions();
        var limit = new Option<int?>("--limit") { Description = "stop after N mappings", HelpName = "N" };
        limit.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && (!int.TryParse(r.Tokens[0].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n <= 0))
                r.AddError($"--limit: '{r.Tokens[0].Value}' is not a positive number");
        });
        var json = Cli.Flag("--json", "machine-readable output (docs/json-format.md)");

        var command = new Command("mappings", "List every present leaf translation of an address space (virtual range, physical address, size, effective rights).");
        machine.AddTo(command);
        command.Add(limit);
        command.Add(json);
        command.SetAction(p =>
        {
            var scenario = machine.Build(p, out var image);
            using var imageScope = image;
            var memory = scenario.BuildMemory();
            var cpu = machine.WithSource(p, () =>
            {
                var booted = scenario.Boot(memory);
                AddressSpaceMap.CheckRoot(booted, memory);    // before any output: a missing root is bad input, not an empty dump
                return booted;
            });
            int max = p.GetValue(limit) ?? int.MaxValue;
            using var stdout = new StreamWriter(Console.OpenStandardOutput(), bufferSize: 1 << 16) { AutoFlush = false };
            if (p.GetValue(json)) Json(stdout, scenario, cpu, memory, max);
            else Text(stdout, scenario, cpu, memory, max);
            return Cli.Ok;
        });
        return command;
    }

    static void Text(StreamWriter o, Scenario s, CpuState cpu, Spec.Memory.GuestMemory memory, int max)
    {
        int va = s.Mode.IsLongMode() ? 16 : 8;
        int pa = Hex.DigitsFor(s.Controls.MaxPhyAddr);
        bool keys = s.Mode.IsLongMode() && s.Controls.Cr4Pke;
        string Cols(string start, string end, string phys, string size, string rights, string entry, string flags) =>
            $"  {start.PadRight(va + 2)}  {end.PadRight(va + 2)}  {phys.PadRight(pa + 2)}  {size,-4}  {rights.PadRight(keys ? 13 : 6)}  {entry.PadRight(pa + 9)}  {flags}";

        o.WriteLine($"cpu      {cpu}");
        o.WriteLine($"memory   {WalkText.Memory(s)}");
        o.WriteLine();
        o.WriteLine(Cols("virtual", "end", "physical", "size", "rights", "leaf entry", "leaf flags"));
        var stats = AddressSpaceMap.Enumerate(cpu, memory, m =>
        {
            o.WriteLine(Cols(Hex.Padded(m.Virtual, va), End(m, va), Hex.Padded(m.Physical, pa), m.Size.Name(), m.Rights.ToString(),
                $"{m.EntryName,-5} {Hex.Padded(m.EntryGpa, pa)}", m.Leaf.Flags(s.EntryBytes)));
            return --max > 0;
        });
        o.WriteLine();
        o.WriteLine(Summary(stats));
    }

    /// <summary>The exclusive end of the page; the top page of the address space ends at 2^64.</summary>
    static string End(Mapping m, int digits) =>
        m.VirtualLast == ulong.MaxValue ? "0x1" + new string('0', 16) : Hex.Padded(m.VirtualLast + 1, digits);

    static string Summary(MapStats st)
    {
        var parts = new List<string>();
        string sizes = string.Join(", ", st.BySize.OrderBy(kv => kv.Key).Select(kv => $"{kv.Value} x {kv.Key.Name()}"));
        parts.Add($"{st.Mappings} mapping{(st.Mappings == 1 ? "" : "s")}" + (sizes.Length > 0 ? $" ({sizes}; {Hex.Size(st.BytesMapped)} mapped)" : ""));
        if (st.Truncated) parts.Add("stopped at --limit");
        parts.Add($"{st.ReservedEntries} entr{(st.ReservedEntries == 1 ? "y" : "ies")} with reserved bits skipped" +
            (st.FirstReserved is { } r ? $" (first: {r.Name} at {Hex.Format(r.Gpa)} = {Hex.Format(r.Raw)}, reserved {Hex.Format(r.Reserved)})" : ""));
        parts.Add($"{st.TablesOutsideMemory} table{(st.TablesOutsideMemory == 1 ? "" : "s")} outside guest memory" +
            (st.FirstOutside is { } f ? $" (first: {Hex.Format(f.Table)}, referenced by the {f.Name} at {Hex.Format(f.Gpa)})" : ""));
        return string.Join("; ", parts);
    }

    static void Json(StreamWriter o, Scenario s, CpuState cpu, Spec.Memory.GuestMemory memory, int max)
    {
        o.Flush();
        using var w = new Utf8JsonWriter(o.BaseStream, WalkJson.WriterOptions(indented: false));
        w.WriteStartObject();
        w.WriteString("mode", s.Mode.Name());
        w.WriteString("cr3", Hex.Format(cpu.Cr3));
        w.WriteString("controls", cpu.Controls.ToString());
        w.WriteStartArray("mappings");
        int sinceFlush = 0;
        var stats = AddressSpaceMap.Enumerate(cpu, memory, m =>
        {
            w.WriteStartObject();
            w.WriteString("va", Hex.Format(m.Virtual));
            w.WriteString("end", m.VirtualLast == ulong.MaxValue ? "0x10000000000000000" : Hex.Format(m.VirtualLast + 1));
            w.WriteString("pa", Hex.Format(m.Physical));
            w.WriteString("page_size", m.Size.Name());
            WalkJson.WriteRights(w, m.Rights);
            w.WriteString("entry", m.EntryName);
            w.WriteString("entry_gpa", Hex.Format(m.EntryGpa));
            w.WriteString("raw", Hex.Format(m.Leaf.Raw));
            w.WriteEndObject();
            if (++sinceFlush == 4096) { w.Flush(); sinceFlush = 0; }
            return --max > 0;
        });
        w.WriteEndArray();
        w.WriteStartObject("summary");
        w.WriteNumber("mappings", stats.Mappings);
        w.WriteStartObject("by_size");
        foreach (var kv in stats.BySize.OrderBy(kv => kv.Key)) w.WriteNumber(kv.Key.Name(), kv.Value);
        w.WriteEndObject();
        w.WriteString("bytes_mapped", Hex.Format(stats.BytesMapped));
        w.WriteBoolean("truncated", stats.Truncated);
        w.WriteNumber("reserved_entries_skipped", stats.ReservedEntries);
        w.WriteNumber("tables_outside_memory", stats.TablesOutsideMemory);
        w.WriteEndObject();
        w.WriteEndObject();
        w.Flush();
        o.BaseStream.WriteByte((byte)'\n');
    }
}
