using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec mappings</c>: every present leaf translation of an address space, one line per leaf
/// entry like a debugger's page-table dump, or (<c>--coalesce</c>) runs of contiguous pages with
/// the same rights like QEMU's <c>info mem</c>.
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
        var range = new Option<string?>("--range") { Description = "only mappings overlapping START-END (hex, 0x optional; END exclusive, may be empty)", HelpName = "START-END" };
        var coalesce = Cli.Flag("--coalesce", "merge contiguous pages with the same rights into one line (like QEMU's info mem)");

        var command = new Command("mappings", "List every present leaf translation of an address space (virtual range, physical address, size, effective rights).");
        machine.AddTo(command);
        command.Add(limit);
        command.Add(range);
        command.Add(coalesce);
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
            var only = p.GetValue(range) is { } r ? AddressRange.Parse(r, "--range") : null;
            var view = new View(p.GetValue(limit) ?? int.MaxValue, only, p.GetValue(coalesce));
            MapStats stats;
            using (var stdout = new StreamWriter(Console.OpenStandardOutput(), bufferSize: 1 << 16) { AutoFlush = false })
                stats = p.GetValue(json) ? Json(stdout, scenario, cpu, memory, view) : Text(stdout, scenario, cpu, memory, view);
            // After the dump, so that it is the last thing a terminal shows.
            foreach (var w in stats.Warnings(cpu.Controls)) Cli.Warn(w);
            return Cli.Ok;
        });
        return command;
    }

    /// <summary>What to show: at most <paramref name="Max"/> lines, mappings overlapping <paramref name="Range"/>, runs or single mappings.</summary>
    sealed record View(int Max, AddressRange? Range, bool Coalesce);

    /// <summary>Enumerates the mappings and hands each line (a mapping, or a run when coalescing) to the writers, up to the limit.</summary>
    static MapStats Each(CpuState cpu, Spec.Memory.GuestMemory memory, View v, Action<Mapping> single, Action<MappingRun> run)
    {
        int left = v.Max;
        if (!v.Coalesce)
            return AddressSpaceMap.Enumerate(cpu, memory, m => { single(m); return --left > 0; }, v.Range);
        return AddressSpaceMap.EnumerateRuns(cpu, memory, r => { run(r); return --left > 0; }, v.Range);
    }

    static MapStats Text(StreamWriter o, Scenario s, CpuState cpu, Spec.Memory.GuestMemory memory, View view)
    {
        int va = s.Mode.IsLongMode() ? 16 : 8;
        int pa = Hex.DigitsFor(s.Controls.MaxPhyAddr);
        bool keys = s.Mode.IsLongMode() && s.Controls.Cr4Pke;
        string Cols(string start, string end, string phys, string size, string rights, string entry, string flags) =>
            $"  {start.PadRight(va + 2)}  {end.PadRight(va + 2)}  {phys.PadRight(pa + 2)}  {size,-4}  {rights.PadRight(keys ? 13 : 6)}  {entry.PadRight(pa + 9)}  {flags}";
        string RunCols(string start, string end, string size, string rights, string pages, string phys) =>
            $"  {start.PadRight(va + 2)}  {end.PadRight(va + 2)}  {size,-18}  {rights.PadRight(keys ? 13 : 6)}  {pages,8}  {phys}";

        o.WriteLine($"cpu      {cpu}");
        o.WriteLine($"memory   {WalkText.Memory(s)}");
        if (view.Range is { } r) o.WriteLine($"range    {Hex.Format(r.Start)}-{(r.End is { } e ? Hex.Format(e) : "")} (mappings that overlap it, listed whole)");
        o.WriteLine();
        o.WriteLine(view.Coalesce ? RunCols("virtual", "end", "size", "rights", "mappings", "physical") : Cols("virtual", "end", "physical", "size", "rights", "leaf entry", "leaf flags"));
        var stats = Each(cpu, memory, view,
            m => o.WriteLine(Cols(Hex.Padded(m.Virtual, va), End(m.VirtualLast, va), Hex.Padded(m.Physical, pa), m.Size.Name(), m.Rights.ToString(),
                $"{m.EntryName,-5} {Hex.Padded(m.EntryGpa, pa)}", AddressSpaceMap.LeafFlags(s.Controls, m))),
            run => o.WriteLine(RunCols(Hex.Padded(run.Virtual, va), End(run.Last, va), Hex.Format(run.Bytes), run.Rights.ToString(),
                run.Mappings.ToString(CultureInfo.InvariantCulture), run.Physical is { } p ? Hex.Padded(p, pa) : "(not contiguous)")));
        o.WriteLine();
        o.WriteLine(Summary(stats));
        return stats;
    }

    /// <summary>The exclusive end of the page; the top page of the address space ends at 2^64.</summary>
    static string End(ulong last, int digits) =>
        last == ulong.MaxValue ? "0x1" + new string('0', 16) : Hex.Padded(last + 1, digits);

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

    static MapStats Json(StreamWriter o, Scenario s, CpuState cpu, Spec.Memory.GuestMemory memory, View view)
    {
        o.Flush();
        using var w = new Utf8JsonWriter(o.BaseStream, WalkJson.WriterOptions(indented: false));
        w.WriteStartObject();
        w.WriteString("mode", s.Mode.Name());
        w.WriteString("cr3", Hex.Format(cpu.Cr3));
        w.WriteString("controls", cpu.Controls.ToString());
        w.WriteStartArray(view.Coalesce ? "runs" : "mappings");
        int sinceFlush = 0;
        void Flush() { if (++sinceFlush == 4096) { w.Flush(); sinceFlush = 0; } }
        static string EndOf(ulong last) => last == ulong.MaxValue ? "0x10000000000000000" : Hex.Format(last + 1);
        var stats = Each(cpu, memory, view,
            m =>
            {
                w.WriteStartObject();
                w.WriteString("va", Hex.Format(m.Virtual));
                w.WriteString("end", EndOf(m.VirtualLast));
                w.WriteString("pa", Hex.Format(m.Physical));
                w.WriteString("page_size", m.Size.Name());
                WalkJson.WriteRights(w, m.Rights);
                w.WriteString("entry", m.EntryName);
                w.WriteString("entry_gpa", Hex.Format(m.EntryGpa));
                w.WriteString("raw", Hex.Format(m.Leaf.Raw));
                w.WriteStartArray("flags");
                foreach (var f in AddressSpaceMap.LeafFlags(s.Controls, m).Split(' ')) w.WriteStringValue(f);
                w.WriteEndArray();
                w.WriteEndObject();
                Flush();
            },
            run =>
            {
                w.WriteStartObject();
                w.WriteString("va", Hex.Format(run.Virtual));
                w.WriteString("end", EndOf(run.Last));
                w.WriteString("bytes", Hex.Format(run.Bytes));
                WalkJson.WriteRights(w, run.Rights);
                w.WriteNumber("mappings", run.Mappings);
                if (run.Physical is { } p) w.WriteString("pa", Hex.Format(p)); else w.WriteNull("pa");
                w.WriteEndObject();
                Flush();
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
        w.WriteStartArray("warnings");
        foreach (var warning in stats.Warnings(cpu.Controls)) w.WriteStringValue(warning);
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteEndObject();
        w.Flush();
        o.BaseStream.WriteByte((byte)'\n');
        return stats;
    }
}
