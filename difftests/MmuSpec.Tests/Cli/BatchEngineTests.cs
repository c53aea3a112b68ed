using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Batch mode's engines: the impl walks alone (its own MOV CR3 and PDPTE check) over native memory it
/// reuses from line to line, both engines list changed entries in walk order, and a batch file is read
/// as it goes, never whole.
/// </summary>
public sealed class BatchEngineTests
{
    // Tables at descending addresses: walk order is not address order.
    const string Descending = """{"mode":"long4","cr3":"0x5000","memory":{"0x5000":"0x4007","0x4000":"0x3007","0x3000":"0x2007","0x2000":"0x9007"},"access":{"gva":"0x0","type":"write"}}""";

    // A PML4 at 0x5000 whose entry 1 maps the PML4 itself (already accessed) and is used again as the
    // PTE: the spec writes every A bit before the leaf's D, so without care the self-mapped entry
    // comes last; in walk order it is first.
    const string SelfMapped = """{"mode":"long4","cr3":"0x5000","memory":{"0x5008":"0x5027","0x5010":"0x2007","0x2018":"0x5007"},"access":{"gva":"0x8080601000","type":"write"}}""";

    [Theory]
    [InlineData(Descending, new ulong[] { 0x5000, 0x4000, 0x3000, 0x2000 })]
    [InlineData(SelfMapped, new ulong[] { 0x5008, 0x5010, 0x2018 })]
    public void Both_engines_list_changed_entries_in_walk_order(string json, ulong[] walkOrder)
    {
        var s = ScenarioJson.Parse(json);
        var spec = SpecWalk.Run(s);
        var impl = ImplWalk.Run(s);
        Assert.IsType<WalkResult.Translated>(spec.Result);
        Assert.Equal(walkOrder, spec.Changes.Select(c => c.Gpa));
        Assert.Equal(walkOrder, impl.Changes.Select(c => c.Gpa));
        Assert.Equal(spec.Changes.ToList(), impl.Changes.ToList());
    }

    [Fact]
    public void A_varied_batch_gives_the_same_lines_on_both_engines()
    {
        string input = VariedBatch(lines: 600, seed: 16);
        var spec = new StringWriter();
        var impl = new StringWriter();
        using var pool = new NativePagePool();
        int specFailed = BatchWalk.Run(new StringReader(input), spec, SpecWalk.Run);
        int implFailed;
        using (var walker = new ImplWalker(pool))
            implFailed = BatchWalk.Run(new StringReader(input), impl, walker.Run);

        var specLines = spec.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var implLines = impl.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(specFailed, implFailed);
        Assert.Equal(specLines.Length, implLines.Length);
        for (int i = 0; i < specLines.Length; i++)
            Assert.True(WithoutRuleAndEngine(specLines[i]) == WithoutRuleAndEngine(implLines[i]),
                $"line {i + 1}: spec {specLines[i]}\n impl {implLines[i]}");

        // The batch is as varied as the test claims: every kind of answer occurs more than once.
        string all = spec.ToString();
        Assert.True(Count(all, "PDPTE") >= 3 && Count(all, "reserved bits") >= 3, "PAE lines with bad PDPTEs");
        Assert.True(Count(all, "\"outcome\":\"page_fault\"") >= 20, "page faults");
        Assert.True(Count(all, "\"outcome\":\"gp\"") >= 5, "non-canonical addresses");
        Assert.True(Count(all, "\"after\"") >= 100, "A/D updates");
        Assert.True(Count(all, "\"page_size\":\"2M\"") + Count(all, "\"page_size\":\"4M\"") >= 3, "large pages");
        Assert.True(Count(all, "\"outcome\":\"ok\"") >= 100, "translations");
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void The_impl_walker_keeps_its_memory_while_the_memslots_stay_and_frees_it()
    {
        using var pool = new NativePagePool();
        var lines = VariedBatch(lines: 200, seed: 3, withMemslots: false).Split('\n');
        using (var walker = new ImplWalker(pool))
        {
            foreach (var line in lines)
            {
                try { walker.Run(ScenarioJson.Parse(line)); }
                catch (InputException) { }
            }
            // Default memslots: [0, 2 MiB) for every line, allocated once.
            Assert.Equal(512, pool.PagesAllocated);
            Assert.Equal(512, pool.PagesInUse);

            walker.Run(ScenarioJson.Parse("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x0","size":"0x4000"},{"gpa":"0x10000","size":"0x1000"}],"access":{"gva":"0x0"}}"""));
            Assert.Equal(5, pool.PagesInUse);           // the 2 MiB slot went, the two new ones came
            walker.Run(ScenarioJson.Parse("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x0","size":"0x4000"}],"access":{"gva":"0x0"}}"""));
            Assert.Equal(4, pool.PagesInUse);
            Assert.Equal(512 + 5, pool.PagesAllocated); // the slot that stayed was kept, not allocated again
        }
        Assert.Equal(0, pool.PagesInUse);
    }

    [Fact]
    public void The_impl_walker_zeroes_what_a_line_wrote_before_the_next_line()
    {
        using var pool = new NativePagePool();
        using var walker = new ImplWalker(pool);
        var write = ScenarioJson.Parse(Descending);
        var first = walker.Run(write);
        var again = walker.Run(write);
        Assert.Equal(first.Changes.ToList(), again.Changes.ToList());   // A/D were set anew from the line's values

        // The same root with nothing in it: a leftover PML4E would translate.
        var empty = walker.Run(ScenarioJson.Parse("""{"mode":"long4","cr3":"0x5000","access":{"gva":"0x0","type":"write"}}"""));
        Assert.Equal(new WalkResult.PageFault(PageFaultErrorCode.Write), empty.Result);
    }

    [Theory]
    [InlineData("0x3003", "cr3 0x2000: PDPTE 0 at gpa 0x2000 = 0x3003 sets reserved bits 0x2, so loading CR3 would #GP")]
    [InlineData("0x3021", "cr3 0x2000: PDPTE 0 at gpa 0x2000 = 0x3021 sets reserved bits 0x20, so loading CR3 would #GP (SDM Table 4-8 reserves PDPTE bits 8:5; QEMU TCG sets bit 5, A, in PDPTEs it walked: for such a dump, --pdpte-as-qemu ignores bits 8:5 as QEMU does)")]
    public void The_impl_checks_the_PDPTEs_itself_with_the_spec_s_words(string pdpte, string message)
    {
        var s = ScenarioJson.Parse($$$"""{"mode":"pae","cr3":"0x2000","memory":{"0x2000":"{{{pdpte}}}"},"access":{"gva":"0x0"}}""");
        Assert.Equal(message, Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message);
        Assert.Equal(message, Assert.Throws<InputException>(() => ImplWalk.Run(s)).Message);

        var outside = ScenarioJson.Parse("""{"mode":"pae","cr3":"0x200000","memslots":[{"gpa":"0x0","size":"0x100000"}],"access":{"gva":"0x0"}}""");
        string expected = "cr3 0x200000: the PDPT at gpa 0x200000 is outside guest memory, so loading CR3 would #GP";
        Assert.Equal(expected, Assert.Throws<InputException>(() => SpecWalk.Run(outside)).Message);
        Assert.Equal(expected, Assert.Throws<InputException>(() => ImplWalk.Run(outside)).Message);
    }

    [Fact]
    public void Over_an_image_too_short_for_a_table_the_impl_names_the_entry_as_the_spec_does()
    {
        string dir = Directory.CreateTempSubdirectory("mmuspec-batch-").FullName;
        try
        {
            var layout = SyntheticImage.Write(Path.Combine(dir, "full.img"), PagingMode.Long4, 4UL << 20, pages4K: 8, pages2M: 0, pages1G: 0);
            var bytes = File.ReadAllBytes(Path.Combine(dir, "full.img"));
            var controls = new PagingControls(PagingMode.Long4, eferNxe: true);
            foreach (int length in new[] { 0x101000, 0x80000 })
            {
                File.WriteAllBytes(Path.Combine(dir, "short.img"), bytes[..length]);
                using var image = MappedImage.Open(Path.Combine(dir, "short.img"));
                var s = Scenario.FromImage(controls, layout.Cr3, image, Access.Read(0x400000));
                string expected = Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message;

                using var pool = new NativePagePool();
                using var memory = new GuestPhysicalMemory(pool);
                memory.AddSlot(0, (ulong)length >> 12);
                for (int off = 0; off < length; off += 8)
                    memory.TryWrite64((ulong)off, BitConverter.ToUInt64(bytes, off));
                Assert.Equal(expected, Assert.Throws<InputException>(() => ImplWalk.Run(s, memory)).Message);
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void A_batch_answers_each_line_before_it_reads_the_next()
    {
        const int lines = 20_000;
        var reader = new GeneratedLines(lines, i => i % 2 == 0 ? Descending : SelfMapped);
        var output = new AnswerCounter(() => reader.LinesRead);
        using var pool = new NativePagePool();
        using var walker = new ImplWalker(pool);
        Assert.Equal(0, BatchWalk.Run(reader, output, walker.Run));
        Assert.Equal(lines, output.Answers);
        Assert.Equal(1, output.MostLinesAhead);   // never more than the line being answered
    }

    [Fact]
    public async Task A_batch_file_is_read_as_the_batch_goes_not_first_in_full()
    {
        if (!OperatingSystem.IsLinux()) return;   // a FIFO shows it: a reader of the whole file would wait for its end
        string dir = Directory.CreateTempSubdirectory("mmuspec-fifo-").FullName;
        string fifo = Path.Combine(dir, "batch.jsonl");
        try
        {
            Assert.Equal(0, mkfifo(fifo, Convert.ToInt32("600", 8)));
            var output = new AnswerCounter(() => 0);
            var batch = Task.Run(() =>
            {
                using var reader = BatchWalk.OpenFile(new FileInfo(fifo));
                return BatchWalk.Run(reader, output, SpecWalk.Run);
            });
            using (var writer = new StreamWriter(fifo))
            {
                writer.WriteLine(Descending);
                writer.Flush();
                // The first answer comes while the file is still open for writing.
                Assert.True(SpinWait.SpinUntil(() => output.Answers == 1, TimeSpan.FromSeconds(30)), "no answer before the end of the file");
                writer.WriteLine(SelfMapped);
            }
            Assert.Equal(0, await batch.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(2, output.Answers);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void A_read_error_in_the_middle_of_a_batch_is_bad_input_naming_the_last_line_read()
    {
        var reader = new GeneratedLines(3, i => i < 2 ? Descending : throw new IOException("Input/output error"));
        var output = new StringWriter();
        var e = Assert.Throws<InputException>(() => BatchWalk.Run(reader, output, SpecWalk.Run));
        Assert.Equal("cannot read the batch input after line 2: Input/output error", e.Message);
        Assert.Equal(2, output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [DllImport("libc", SetLastError = true)]
    static extern int mkfifo([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int mode);

    /// <summary>A reader that makes each line only when asked for it, and counts how many it made.</summary>
    sealed class GeneratedLines(int count, Func<int, string> line) : TextReader
    {
        public int LinesRead { get; private set; }
        public override string? ReadLine() => LinesRead < count ? line(LinesRead++) : null;
    }

    /// <summary>Counts answers and records how far the input had been read when each was written.</summary>
    sealed class AnswerCounter(Func<int> linesRead) : TextWriter
    {
        volatile int answers;
        public int Answers => answers;
        public int MostLinesAhead { get; private set; }
        public override Encoding Encoding => Encoding.UTF8;
        public override void WriteLine(string? value)
        {
            MostLinesAhead = Math.Max(MostLinesAhead, linesRead() - answers);
            answers++;
        }
    }

    static int Count(string text, string what)
    {
        int n = 0;
        for (int at = text.IndexOf(what, StringComparison.Ordinal); at >= 0; at = text.IndexOf(what, at + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }

    static string WithoutRuleAndEngine(string line)
    {
        var o = JsonNode.Parse(line)!.AsObject();
        o.Remove("rule");
        o.Remove("engine");
        return o.ToJsonString();
    }

    /// <summary>
    /// Batch lines in every mode with tables at scattered addresses below 1 MiB, A/D bits to set (and
    /// some already set), not-present and reserved-bit entries, large pages, non-canonical addresses,
    /// PAE PDPTEs with reserved bits, and (with <paramref name="withMemslots"/>) lines with two memslots
    /// among lines with the default one, so the impl's memory changes shape now and then.
    /// </summary>
    internal static string VariedBatch(int lines, int seed, bool withMemslots = true)
    {
        var r = new Random(seed);
        var sb = new StringBuilder();
        string H(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);
        for (int n = 0; n < lines; n++)
        {
            string mode = new[] { "bits32", "pae", "long4", "long5" }[r.Next(4)];
            bool wide = mode != "bits32", pse = r.Next(2) == 0, nxe = wide && r.Next(3) > 0;
            int levels = mode switch { "long4" => 4, "long5" => 5, _ => 2 };
            int indexBits = wide ? 9 : 10;
            var frames = Enumerable.Range(0x10, 0xF0).OrderBy(_ => r.Next()).Take(levels + 1).Select(f => (ulong)f).ToArray();
            var memory = new Dictionary<ulong, ulong>();
            ulong gva = 0, cr3;
            var tables = frames;
            if (mode == "pae")
            {
                cr3 = (frames[0] << 12) + 32 * (ulong)r.Next(4);
                int slot = r.Next(4);
                ulong pdpte = (frames[1] << 12) | 1;
                if (r.Next(12) == 0) pdpte |= new ulong[] { 2, 4, 0x20, 0x100 }[r.Next(4)];
                memory[cr3 + 8 * (ulong)slot] = pdpte;
                gva = (ulong)slot << 30;
                tables = frames[1..];
            }
            else cr3 = frames[0] << 12;
            for (int level = 0; level < levels; level++)
            {
                int shift = 12 + indexBits * (levels - 1 - level);
                ulong index = (ulong)r.Next(1 << indexBits);
                gva |= index << shift;
                bool leaf = level == levels - 1;
                bool large = !leaf && level == levels - 2 && r.Next(6) == 0 && (wide || pse);
                ulong target = leaf || large ? (ulong)r.Next(0x100, 0x4000) & (large ? ~(wide ? 0x1FFUL : 0x3FFUL) : ~0UL) : tables[level + 1];
                ulong e = (target << 12) | (r.Next(30) > 0 ? 1UL : 0) | (r.Next(5) > 0 ? 2UL : 0) | (r.Next(5) > 1 ? 4UL : 0) | (r.Next(3) == 0 ? 0x20UL : 0);
                if (large) e |= 0x80;
                if ((leaf || large) && r.Next(3) == 0) e |= 0x40;
                if (nxe && r.Next(10) == 0) e |= 1UL << 63;
                if (r.Next(40) == 0) e |= wide ? 1UL << 51 : 0x200000UL;
                memory[(tables[level] << 12) + index * (wide ? 8UL : 4UL)] = e;
                if (large) break;
            }
            gva |= (uint)r.Next(4096);
            if (levels >= 4 && r.Next(2) == 0)
            {
                int top = levels == 4 ? 47 : 56;
                if (((gva >> top) & 1) != 0 || r.Next(8) == 0) gva |= ~0UL << top;   // canonical, or (bit clear) not
            }
            string memslots = withMemslots && r.Next(4) == 0
                ? ""","memslots":[{"gpa":"0x0","size":"0x100000"},{"gpa":"0x4000000","size":"0x200000"}]"""
                : "";
            string words = string.Join(",", memory.Select(kv => $"\"{H(kv.Key)}\":\"{H(kv.Value)}\""));
            string type = new[] { "read", "write", "write", "fetch" }[r.Next(4)];
            string privilege = r.Next(2) == 0 ? "user" : "supervisor";
            sb.Append(CultureInfo.InvariantCulture,
                $"{{\"mode\":\"{mode}\",\"pse\":{(pse ? "true" : "false")},\"nxe\":{(nxe ? "true" : "false")},\"wp\":{(r.Next(2) == 0 ? "true" : "false")},\"smep\":{(r.Next(5) == 0 ? "true" : "false")},\"smap\":{(r.Next(5) == 0 ? "true" : "false")},\"cr3\":\"{H(cr3)}\"{memslots},\"memory\":{{{words}}},\"access\":{{\"gva\":\"{H(gva)}\",\"type\":\"{type}\",\"privilege\":\"{privilege}\"}}}}");
            sb.Append('\n');
        }
        return sb.ToString();
    }
}
