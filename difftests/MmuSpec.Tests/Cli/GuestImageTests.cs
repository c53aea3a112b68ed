using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// Real guests' page tables read the documented way: PAE dumps taken under QEMU TCG, mappings
/// with only --mode on a kernel that sets XD, the mappings view (flags, range, runs) and #GP in words.
/// </summary>
public sealed class GuestImageTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("mmuspec-guest-tests-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string File(string name) => Path.Combine(dir, name);

    // PAE: PDPTE 0 at 0x2020 -> PD 0x3000 -> PT 0x4000 -> page 0x5000. QEMU TCG set A (bit 5) in the PDPTE it walked.
    const string QemuPae = """{"mode":"pae","nxe":true,"cr3":"0x2020","memory":{"0x2020":"0x3021","0x3000":"0x4067","0x4000":"0x5067"},"access":{"gva":"0x123"}}""";

    [Fact]
    public void A_PAE_dump_with_QEMUs_A_bit_in_a_PDPTE_is_refused_by_default_naming_the_reason_and_the_option()
    {
        var s = ScenarioJson.Parse(QemuPae);
        var e = Assert.Throws<InputException>(() => SpecWalk.Run(s));
        Assert.Equal("cr3 0x2020: PDPTE 0 at gpa 0x2020 = 0x3021 sets reserved bits 0x20, so loading CR3 would #GP"
            + " (SDM Table 4-8 reserves PDPTE bits 8:5; QEMU TCG sets bit 5, A, in PDPTEs it walked: for such a dump, --pdpte-as-qemu ignores bits 8:5 as QEMU does)", e.Message);
    }

    [Fact]
    public void With_the_QEMU_option_the_PDPTEs_bits_8_to_5_are_ignored_and_every_other_rule_still_holds()
    {
        var s = ScenarioJson.Parse(QemuPae).WithQemuPdptes();
        var r = SpecWalk.Run(s);
        Assert.Equal(new WalkResult.Translated(0x5123, PageSize.Size4K, new TranslationRights(true, true, false, 0)), r.Result);
        Assert.Equal(0x3001UL, r.Cpu.Pdptes[0]);    // the register holds the PDPTE as QEMU reads it

        // Bits 2:1 and 63:M stay reserved: the option removes QEMU's bits only, and says nothing about QEMU then.
        var bad = ScenarioJson.Parse(QemuPae.Replace("\"0x3021\"", "\"0x3027\"", StringComparison.Ordinal)).WithQemuPdptes();
        var e = Assert.Throws<InputException>(() => SpecWalk.Run(bad));
        Assert.Equal("cr3 0x2020: PDPTE 0 at gpa 0x2020 = 0x3027 sets reserved bits 0x6, so loading CR3 would #GP", e.Message);

        // The mappings dump uses the same registers.
        var memory = s.BuildMemory();
        var (mappings, _) = AddressSpaceMap.List(s.Boot(memory), memory);
        Assert.Equal((0UL, 0x5000UL), (Assert.Single(mappings).Virtual, mappings[0].Physical));
    }

    [Fact]
    public void Mappings_with_only_a_mode_on_a_kernel_that_sets_XD_warn_and_name_EFER_NXE()
    {
        var layout = SyntheticImage.Write(File("linux.img"), PagingMode.Long4, 8UL << 20, pages4K: 64, pages2M: 4, pages1G: 2);
        using var image = MappedImage.Open(File("linux.img"));
        MapStats Dump(PagingControls c)
        {
            var s = Scenario.FromImage(c, layout.Cr3, image, access: null);
            var memory = s.BuildMemory();
            return AddressSpaceMap.Enumerate(s.Boot(memory), memory, _ => true);
        }

        var modeOnly = new PagingControls(PagingMode.Long4);
        var stats = Dump(modeOnly);
        Assert.True(stats.ReservedByBit[63] > MapStats.SuspiciousReservedCount);
        var warning = Assert.Single(stats.Warnings(modeOnly));
        Assert.StartsWith($"{stats.ReservedByBit[63]} entries skipped because they set bit 63 (XD), reserved because EFER.NXE=0: did you mean --nxe", warning);

        // With the guest's real EFER (NXE) nothing is skipped and nothing is said.
        var registers = PagingControls.FromRegisters(0x80050033, 0x3406f0, 0xd01, 0, 0, 46);
        var real = Dump(registers);
        Assert.Equal(0, real.ReservedEntries);
        Assert.Empty(real.Warnings(registers));
    }

    [Fact]
    public void A_few_reserved_entries_are_counted_without_a_warning()
    {
        var layout = SyntheticImage.Write(File("few.img"), PagingMode.Long4, 4UL << 20, pages4K: 8, pages2M: 0, pages1G: 0, reservedEntries: 3);
        using var image = MappedImage.Open(File("few.img"));
        var c = new PagingControls(PagingMode.Long4, eferNxe: true);
        var s = Scenario.FromImage(c, layout.Cr3, image, access: null);
        var memory = s.BuildMemory();
        var stats = AddressSpaceMap.Enumerate(s.Boot(memory), memory, _ => true);
        Assert.Equal(3, stats.ReservedEntries);
        Assert.Empty(stats.Warnings(c));
    }

    [Fact]
    public void The_flags_column_shows_G_PCD_PWT_PAT_and_the_protection_key()
    {
        // 4-level with PKE: a 4K PTE with PWT PCD PAT(bit 7) G and key 5; a 2M page with PAT at bit 12 and key 0.
        var s = ScenarioJson.Parse("""{"mode":"long4","nxe":true,"pke":true,"cr3":"0x1000","memory":{"0x1000":"0x2027","0x2000":"0x3027","0x3000":"0x4027","0x3008":"0x80000000002010e3","0x4000":"0x28000000000091fd"}}""");
        var memory = s.BuildMemory();
        var (m, _) = AddressSpaceMap.List(s.Boot(memory), memory);
        Assert.Equal(2, m.Count);
        Assert.Equal("P R U PWT PCD A D PAT G PK=5", AddressSpaceMap.LeafFlags(s.Controls, m[0]));
        Assert.Equal("P W S A D PS PAT XD PK=0", AddressSpaceMap.LeafFlags(s.Controls, m[1]));

        // 32-bit paging: no XD, no key; PAT of a 4M page is bit 12.
        var b = ScenarioJson.Parse("""{"mode":"bits32","pse":true,"cr3":"0x1000","memory":{"0x1c00":"0x401183"}}""");
        var bm = b.BuildMemory();
        Assert.Equal("P W S PS PAT G", AddressSpaceMap.LeafFlags(b.Controls, Assert.Single(AddressSpaceMap.List(b.Boot(bm), bm).Mappings)));
    }

    [Fact]
    public void A_range_lists_the_mappings_that_overlap_it_and_reads_fewer_tables()
    {
        var layout = SyntheticImage.Write(File("range.img"), PagingMode.Long5, 8UL << 20, pages4K: 400, pages2M: 4, pages1G: 2);
        using var image = MappedImage.Open(File("range.img"));
        var s = Scenario.FromImage(new PagingControls(PagingMode.Long5, eferNxe: true), layout.Cr3, image, access: null);
        var memory = s.BuildMemory();
        var cpu = s.Boot(memory);
        var (all, allStats) = AddressSpaceMap.List(cpu, memory);

        var range = AddressRange.Parse("ffffffff81100000-ffffffff81400000", "--range");   // inside the first 2M page, up to the second's end
        var (some, someStats) = AddressSpaceMap.List(cpu, memory, range: range);
        Assert.Equal(all.Where(m => m.VirtualLast >= 0xffffffff81100000 && m.Virtual < 0xffffffff81400000), some);
        Assert.Equal([0xffffffff81000000UL, 0xffffffff81200000UL], some.Select(m => m.Virtual));
        Assert.True(someStats.TablesRead < allStats.TablesRead);

        // The lower half only, END left open, and a range across the canonical hole.
        Assert.Equal(all.Where(m => m.Virtual >= 0x5555_0000_0000), AddressSpaceMap.List(cpu, memory, range: AddressRange.Parse("0x5555_0000_0000-", "--range")).Mappings);
        Assert.Equal(all.Where(m => m.Virtual < 0x5555_0000_0000), AddressSpaceMap.List(cpu, memory, range: AddressRange.Parse("0-5555_0000_0000", "--range")).Mappings);

        Assert.Equal("--range: the end 0x1000 is not above the start 0x2000 (END is exclusive)", Assert.Throws<InputException>(() => AddressRange.Parse("2000-1000", "--range")).Message);
        Assert.Equal("--range: 'ffff' is not a range (write START-END in hex, END exclusive: ffffffff81000000-ffffffff82000000)", Assert.Throws<InputException>(() => AddressRange.Parse("ffff", "--range")).Message);
    }

    [Fact]
    public void Coalesced_runs_cover_the_same_pages_and_no_two_neighbours_could_merge()
    {
        var layout = SyntheticImage.Write(File("runs.img"), PagingMode.Long4, 8UL << 20, pages4K: 400, pages2M: 6, pages1G: 2);
        using var image = MappedImage.Open(File("runs.img"));
        var s = Scenario.FromImage(new PagingControls(PagingMode.Long4, eferNxe: true), layout.Cr3, image, access: null);
        var memory = s.BuildMemory();
        var cpu = s.Boot(memory);
        var (all, _) = AddressSpaceMap.List(cpu, memory);
        var runs = new List<MappingRun>();
        AddressSpaceMap.EnumerateRuns(cpu, memory, r => { runs.Add(r); return true; });

        Assert.Equal(all.Count, runs.Sum(r => r.Mappings));
        Assert.True(runs.Count < all.Count / 10, $"{runs.Count} runs for {all.Count} mappings");
        foreach (var r in runs)
        {
            var inside = all.Where(m => m.Virtual >= r.Virtual && m.VirtualLast <= r.Last).ToList();
            Assert.Equal(r.Mappings, inside.Count);
            Assert.All(inside, m => Assert.Equal(r.Rights, m.Rights));
            Assert.Equal(r.Bytes, inside.Aggregate(0UL, (sum, m) => sum + m.Size.Bytes()));
        }
        for (int i = 1; i < runs.Count; i++)
            Assert.False(runs[i - 1].Last + 1 == runs[i].Virtual && runs[i - 1].Rights == runs[i].Rights, $"runs {i - 1} and {i} could merge");
        // Kernel text: 2M pages, read-only and executable, physically contiguous from 16 MiB.
        var text = Assert.Single(runs, r => r.Virtual == 0xffffffff81000000);
        Assert.Equal((3L, 0x600000UL, (ulong?)0x1000000UL), (text.Mappings, text.Bytes, text.Physical));

        // A limit counts runs.
        var two = new List<MappingRun>();
        Assert.True(AddressSpaceMap.EnumerateRuns(cpu, memory, r => { two.Add(r); return two.Count < 2; }).Truncated);
        Assert.Equal(runs.Take(2), two);
    }

    [Fact]
    public void Text_output_names_a_GP_in_words()
    {
        var r = SpecWalk.Run(ScenarioJson.Parse("""{"mode":"long4","cr3":"0x1000","access":{"gva":"0x800000000000"}}"""));
        string text = MmuSpec.Cli.WalkText.Render(r);
        Assert.Contains("result   #GP: non-canonical linear address (SDM §3.3.7.1)\n", text, StringComparison.Ordinal);
        Assert.DoesNotContain("NonCanonical", text, StringComparison.Ordinal);
        foreach (var reason in Enum.GetValues<GpReason>())
            Assert.NotEqual(reason.ToString(), reason.Describe());
        // Replay traces and failure reports print the spec's results: the same words there.
        Assert.Equal("#GP: non-canonical linear address (SDM §3.3.7.1)", new WalkResult.GeneralProtection(GpReason.NonCanonical).ToString());
        Assert.Equal("#GP: a present PDPTE sets reserved bits (SDM §4.4.1, Table 4-8)",
            new MmuSpec.Spec.GuestWalk.OpResult.GeneralProtection(GpReason.PdpteReservedBits).ToString());
    }
}
