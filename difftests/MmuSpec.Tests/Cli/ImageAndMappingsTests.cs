using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>Memory images (mapped, never copied), the mappings dump, and the errors for images too short for a walk.</summary>
public sealed class ImageAndMappingsTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("mmuspec-tests-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    string File(string name) => Path.Combine(dir, name);

    [Fact]
    public void A_mapped_image_reads_little_endian_qwords_at_their_file_offset()
    {
        var bytes = new byte[8192];
        BitConverter.TryWriteBytes(bytes.AsSpan(0x1ff8), 0x8000_0000_0000_1067UL);
        System.IO.File.WriteAllBytes(File("img"), bytes);
        using var image = MappedImage.Open(File("img"));
        Assert.Equal(8192UL, image.Length);
        Assert.Equal(0x8000_0000_0000_1067UL, image.ReadQword(0x1ff8));
        Assert.Equal(0UL, image.ReadQword(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => image.ReadQword(8192));
    }

    [Fact]
    public void Missing_empty_and_directory_images_are_bad_input()
    {
        System.IO.File.WriteAllBytes(File("empty"), []);
        Assert.Equal($"image '{File("nope")}' does not exist", Assert.Throws<InputException>(() => MappedImage.Open(File("nope"))).Message);
        Assert.Equal($"image '{File("empty")}' is empty", Assert.Throws<InputException>(() => MappedImage.Open(File("empty"))).Message);
        Assert.Equal($"image '{dir}' is a directory, not a memory image", Assert.Throws<InputException>(() => MappedImage.Open(dir)).Message);
    }

    [Fact]
    public void Mappings_of_a_synthetic_5level_image_list_every_leaf_as_the_spec_translates_it()
    {
        var layout = SyntheticImage.Write(File("long5.img"), PagingMode.Long5, 8UL << 20, pages4K: 600, pages2M: 4, pages1G: 2, reservedEntries: 1);
        using var image = MappedImage.Open(File("long5.img"));
        var controls = new PagingControls(PagingMode.Long5, cr0Wp: true, eferNxe: true);
        var s = Scenario.FromImage(controls, layout.Cr3, image, access: null);
        var memory = s.BuildMemory();
        var cpu = s.Boot(memory);

        var (mappings, stats) = AddressSpaceMap.List(cpu, memory);

        Assert.Equal(606, mappings.Count);
        Assert.Equal(600, stats.BySize[PageSize.Size4K]);
        Assert.Equal(4, stats.BySize[PageSize.Size2M]);
        Assert.Equal(2, stats.BySize[PageSize.Size1G]);
        Assert.Equal(1, stats.ReservedEntries);
        Assert.Equal(0, stats.TablesOutsideMemory);
        Assert.Equal(mappings.OrderBy(m => m.Virtual).Select(m => m.Virtual), mappings.Select(m => m.Virtual));   // ascending, canonical
        Assert.Contains(mappings, m => m.Virtual == 0xffff_ffff_8100_0000 && m.Size == PageSize.Size2M && !m.Rights.Writable && !m.Rights.NoExecute);
        Assert.Contains(mappings, m => m.Virtual == 0xff11_0000_4000_0000 && m.Physical == 0x4000_0000 && m.Size == PageSize.Size1G && m.Rights.NoExecute);

        // The spec is the oracle: a supervisor read of each page translates to the listed frame with the listed rights.
        foreach (var m in mappings)
        {
            var e = PageWalk.Explain(cpu, memory, Access.Read(m.Virtual + 0x123));
            var t = Assert.IsType<WalkResult.Translated>(e.Result);
            Assert.Equal(m.Physical + 0x123, t.Gpa);
            Assert.Equal(m.Size, t.Size);
            Assert.Equal(m.Rights, t.Rights);
        }
    }

    [Fact]
    public void Mappings_honour_PAE_and_32bit_rules_from_the_spec()
    {
        // PAE: a 2M page and a 4K page; a PDE with a reserved bit (bit 63 without NXE) is skipped.
        var pae = ScenarioJson.Parse("""{"mode":"pae","cr3":"0x1000","memory":{"0x1000":"0x2001","0x1018":"0x3001","0x2000":"0x4007","0x2008":"0x600083","0x2010":"0x8000000000800083","0x4008":"0x9005"}}""");
        var pm = pae.BuildMemory();
        var (paeMaps, paeStats) = AddressSpaceMap.List(pae.Boot(pm), pm);
        Assert.Equal([(0x1000UL, PageSize.Size4K, 0x9000UL), (0x200000UL, PageSize.Size2M, 0x600000UL)], paeMaps.Select(m => (m.Virtual, m.Size, m.Physical)));
        Assert.Equal(1, paeStats.ReservedEntries);

        // 32-bit paging: PS is ignored without CR4.PSE (the PDE references a table), a 4M page with it.
        const string bits32 = "\"mode\":\"bits32\",\"cr3\":\"0x1000\",\"memory\":{\"0x1c00\":\"0x400083\",\"0x1000\":\"0x2003\",\"0x2004\":\"0x7005\"}";
        var withPse = ScenarioJson.Parse("{\"pse\":true," + bits32 + "}");
        var withoutPse = ScenarioJson.Parse("{" + bits32 + "}");
        var m1 = withPse.BuildMemory();
        var m2 = withoutPse.BuildMemory();
        Assert.Equal([(0x1000UL, PageSize.Size4K), (0xc000_0000UL, PageSize.Size4M)], AddressSpaceMap.List(withPse.Boot(m1), m1).Mappings.Select(m => (m.Virtual, m.Size)));
        var (noPse, noPseStats) = AddressSpaceMap.List(withoutPse.Boot(m2), m2);
        Assert.Equal(0x1000UL, Assert.Single(noPse).Virtual);
        Assert.Equal(1, noPseStats.TablesOutsideMemory);   // the PDE's "table" at 0x400000 is beyond the default 2 MiB memslot
    }

    [Fact]
    public void A_limit_stops_the_dump_early()
    {
        var layout = SyntheticImage.Write(File("small.img"), PagingMode.Long4, 4UL << 20, pages4K: 100, pages2M: 0, pages1G: 0);
        using var image = MappedImage.Open(File("small.img"));
        var s = Scenario.FromImage(new PagingControls(PagingMode.Long4, eferNxe: true), layout.Cr3, image, access: null);
        var memory = s.BuildMemory();
        var (mappings, stats) = AddressSpaceMap.List(s.Boot(memory), memory, limit: 7);
        Assert.Equal(7, mappings.Count);
        Assert.True(stats.Truncated);
    }

    [Fact]
    public void An_image_shorter_than_a_table_the_walk_needs_is_a_one_line_error()
    {
        var layout = SyntheticImage.Write(File("full.img"), PagingMode.Long4, 4UL << 20, pages4K: 8, pages2M: 0, pages1G: 0);
        var controls = new PagingControls(PagingMode.Long4, eferNxe: true);
        var bytes = System.IO.File.ReadAllBytes(File("full.img"));

        // The root (PML4 at 0x100000) lies beyond a 512 KiB image.
        System.IO.File.WriteAllBytes(File("root.img"), bytes[..(512 << 10)]);
        using (var image = MappedImage.Open(File("root.img")))
        {
            var s = Scenario.FromImage(controls, layout.Cr3, image, Access.Read(0x400000));
            Assert.Equal("image is 524288 bytes but the walk needs the PML4E at gpa 0x100000", Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message);
            var memory = s.BuildMemory();
            Assert.Equal("image is 524288 bytes but the walk needs the PML4E at gpa 0x100000",
                Assert.Throws<InputException>(() => AddressSpaceMap.Enumerate(s.Boot(memory), memory, _ => true)).Message);
        }

        // The root is there, the PDPT (0x101000) is not: the walk fails, the dump counts the table and goes on.
        System.IO.File.WriteAllBytes(File("pdpt.img"), bytes[..0x101000]);
        using (var image = MappedImage.Open(File("pdpt.img")))
        {
            var s = Scenario.FromImage(controls, layout.Cr3, image, Access.Read(0x400000));
            Assert.Equal("image is 1052672 bytes but the walk needs the PDPTE at gpa 0x101000", Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message);
            var memory = s.BuildMemory();
            var (mappings, stats) = AddressSpaceMap.List(s.Boot(memory), memory);
            Assert.Empty(mappings);
            Assert.True(stats.TablesOutsideMemory > 0);
            Assert.Equal(("PML4E", 0x100000UL, 0x101000UL), stats.FirstOutside);
        }
    }

    [Fact]
    public void A_PAE_walk_over_an_image_too_short_for_the_PDPT_is_a_one_line_error()
    {
        System.IO.File.WriteAllBytes(File("tiny.img"), new byte[8192]);
        using var image = MappedImage.Open(File("tiny.img"));
        var s = Scenario.FromImage(new PagingControls(PagingMode.Pae), 0x4000, image, Access.Read(0));
        Assert.Equal("image is 8192 bytes but the walk needs the PDPT at gpa 0x4000", Assert.Throws<InputException>(() => SpecWalk.Run(s)).Message);
    }
}
