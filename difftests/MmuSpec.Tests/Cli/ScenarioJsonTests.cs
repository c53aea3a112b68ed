using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>Scenario JSON (docs/json-format.md): what parses, and the exact one-line error for what does not.</summary>
public sealed class ScenarioJsonTests
{
    const string Tables = "\"memory\":{\"0x1000\":\"0x2007\",\"0x2000\":\"0x3007\",\"0x3010\":\"0x4007\",\"0x4008\":\"0x800000000000a007\"}";

    [Fact]
    public void A_full_scenario_parses_into_controls_memory_and_access()
    {
        var s = ScenarioJson.Parse($$"""
            {
              // comments and trailing commas are allowed
              "mode": "long4", "wp": true, "nxe": true, "smap": true, "pkru": "0x4", "maxphyaddr": 40,
              "cr3": "0x1000",
              {{Tables}},
              "access": { "gva": "0x40_1234", "type": "write", "privilege": "user" },
            }
            """);
        Assert.Equal(new PagingControls(PagingMode.Long4, cr0Wp: true, cr4Smap: true, eferNxe: true, pkru: 4, maxPhyAddr: 40), s.Controls);
        Assert.Equal(0x1000UL, s.Cr3);
        Assert.Equal(4, s.Memory.Length);
        Assert.Equal(new MemoryWord(0x4008, 0x8000_0000_0000_a007), s.Memory[3]);
        Assert.Equal(new Access(0x401234, AccessType.Write, Privilege.User), s.Access);
        // No memslots given: one slot from gpa 0, at least 1 MiB, in 2 MiB steps.
        Assert.Equal(0x200UL, Assert.Single(s.Slots).Pages);
    }

    [Fact]
    public void Raw_registers_decide_the_mode_and_flags_and_override_mode()
    {
        var s = ScenarioJson.Parse("""{"mode":"bits32","cr0":"0x80050033","cr4":"0x3406f0","efer":"0xd01","rflags":"0x40000","cr3":"0x1000"}""");
        Assert.Equal(PagingMode.Long4, s.Mode);
        Assert.True(s.Controls.Cr0Wp && s.Controls.Cr4Smep && s.Controls.Cr4Smap && s.Controls.EferNxe && s.Controls.EflagsAc && s.Controls.Cr4Pse);
        Assert.False(s.Controls.Cr4Pke);
        Assert.Null(s.Access);
    }

    [Fact]
    public void Addresses_are_hex_strings_0x_optional_or_integers_and_maxphyaddr_is_decimal()
    {
        var s = ScenarioJson.Parse("""{"mode":"long5","cr3":4096,"maxphyaddr":"52","memslots":[{"gpa":"0","size":"0x2000"}],"memory":{"0x1000":"0X3"},"access":{"gva":"ff11_0000_0000_0000"}}""");
        Assert.Equal(4096UL, s.Cr3);
        Assert.Equal(52, s.Controls.MaxPhyAddr);
        Assert.Equal(2UL, Assert.Single(s.Slots).Pages);
        Assert.Equal(new MemoryWord(0x1000, 3), Assert.Single(s.Memory));
        Assert.Equal(0xff11_0000_0000_0000UL, s.Access!.Gva);
        Assert.Equal(AccessType.Read, s.Access.Type);
        Assert.Equal(Privilege.Supervisor, s.Access.Privilege);
    }

    [Theory]
    [InlineData("""{"mode": "long4", cr3: 1}""", "malformed JSON at line 1, column 19: 'c' is an invalid start of a property name. Expected a '\"'")]
    [InlineData("""[1, 2]""", "a scenario is a JSON object, not an array")]
    [InlineData("""{"mode":"long7","cr3":"0x1000"}""", "mode: unknown paging mode 'long7' (expected bits32, pae, long4 or long5)")]
    [InlineData("""{"cr3":"0x1000"}""", "no paging mode: give mode (bits32, pae, long4 or long5) or raw registers cr0/cr4/efer")]
    [InlineData("""{"mode":"long4"}""", "cr3 is missing")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","acess":{}}""", "unknown field 'acess' (known: comment, mode, wp, pse, smep, smap, pke, nxe, ac, pkru, maxphyaddr, cr0, cr4, efer, rflags, cr3, memory, memslots, access, ept)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","wp":"yes"}""", "wp: expected true or false, got the string \"yes\"")]
    [InlineData("""{"mode":"long4","cr3":"0x10zz"}""", "cr3: '0x10zz' is not a hex number (registers and addresses are hex, 0x optional: 80050033, 0x1000)")]
    [InlineData("""{"mode":"long4","cr3":-1}""", "cr3: expected a hex string like \"0x1000\" or a non-negative integer, got the number -1")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","maxphyaddr":60}""", "maxphyaddr 60 is out of range (36..52)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","pkru":"0x100000000"}""", "pkru 0x100000000 does not fit in 32 bits")]
    [InlineData("""{"cr0":"0x11","cr3":"0x1000"}""", "CR0 0x11 has PG=0: paging is off, there is nothing to walk")]
    [InlineData("""{"cr0":"0x80000001","efer":"0x500","cr3":"0x1000"}""", "EFER 0x500 enables long mode but CR4 0x0 has PAE=0, which the CPU refuses")]
    [InlineData("""{"mode":"long4","cr4":"0x20","cr3":"0x1000"}""", "cr4 needs cr0 as well: raw registers decode the mode from CR0, CR4 and EFER")]
    [InlineData("""{"mode":"long4","cr3":"0x1000000000000"}""", "cr3 0x1000000000000 sets bits above MAXPHYADDR (46): bits 63:46 of CR3 are reserved and MOV CR3 would #GP")]
    [InlineData("""{"mode":"pae","cr3":"0x100000000"}""", "cr3 0x100000000 does not fit in 32 bits (CR3 is 32 bits wide in pae paging)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"0x1004":"0x1"}}""", "memory 0x1004: gpa is not 8-byte aligned (long4 entries are 8 bytes)")]
    [InlineData("""{"mode":"bits32","cr3":"0x1000","memory":{"0x1004":"0x100000000"}}""", "memory 0x1004: value 0x100000000 does not fit in a 4-byte bits32 entry")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"0x400000000000":"0x1"}}""", "memory 0x400000000000: gpa is beyond MAXPHYADDR (46 bits)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"0x1000":"0x1","0x01000":"0x2"}}""", "memory 0x1000: gpa is given twice")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"page":"0x1"}}""", "memory: key 'page' is not a hex number (registers and addresses are hex, 0x optional: 80050033, 0x1000)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x0","size":"0x2000"}],"memory":{"0x5000":"0x1"}}""", "memory 0x5000: gpa is outside every memslot")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x10","size":"0x2000"}]}""", "memslots[0]: gpa 0x10 is not 4 KiB aligned")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x0","size":"0x2000"},{"gpa":"0x1000","size":"0x1000"}]}""", "memslots overlap: slot gfn [0x0, 0x2) and slot gfn [0x1, 0x2)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memslots":[{"gpa":"0x3ffffffff000","size":"0x2000"}]}""", "memslots[0]: [0x3ffffffff000, 0x400000001000) reaches beyond MAXPHYADDR (46 bits)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","access":"0x1000"}""", "access: expected an object like {\"gva\": \"0x1000\", \"type\": \"read\"}, got the string \"0x1000\"")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","access":{"type":"read"}}""", "access.gva is missing")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","access":{"gva":"0x0","type":"exec2"}}""", "access.type: unknown access type 'exec2' (expected read, write or fetch)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","access":{"gva":"0x0","privilege":"root"}}""", "access.privilege: unknown privilege 'root' (expected supervisor, user or implicit)")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","access":{"gva":"0x0","type":"fetch","privilege":"implicit"}}""", "access: an instruction fetch is never an implicit supervisor-mode access")]
    [InlineData("""{"mode":"pae","cr3":"0x1000","access":{"gva":"0x100000000"}}""", "access: gva 0x100000000 is wider than 32 bits (linear addresses are 32 bits in pae paging)")]
    public void Bad_scenarios_are_one_line_errors_naming_the_problem(string json, string message)
    {
        var e = Assert.Throws<InputException>(() => ScenarioJson.Parse(json));
        Assert.Equal(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_PAE_CR3_whose_PDPTE_sets_reserved_bits_cannot_boot()
    {
        var s = ScenarioJson.Parse("""{"mode":"pae","cr3":"0x1000","memory":{"0x1008":"0x7"},"access":{"gva":"0x0"}}""");
        var e = Assert.Throws<InputException>(() => SpecWalk.Run(s));
        Assert.Equal("cr3 0x1000: PDPTE 1 at gpa 0x1008 = 0x7 sets reserved bits 0x6, so loading CR3 would #GP", e.Message);
    }

    [Fact]
    public void A_walk_needs_an_access()
    {
        var s = ScenarioJson.Parse("""{"mode":"long4","cr3":"0x1000"}""");
        var e = Assert.Throws<InputException>(() => SpecWalk.Run(s));
        Assert.Equal("no access to walk: give \"access\": {\"gva\": ...} in the scenario, or --gva", e.Message);
    }

    [Theory]
    [InlineData("0x1000", 0x1000UL)]
    [InlineData("0XFFFF_8880_0000_0000", 0xFFFF_8880_0000_0000UL)]
    [InlineData(" 4096 ", 4096UL)]
    [InlineData("0xffffffffffffffff", ulong.MaxValue)]
    [InlineData("0x", null)]
    [InlineData("-1", null)]
    [InlineData("0x1_0000_0000_0000_0000", null)]
    [InlineData("ten", null)]
    public void Hex_parses_what_kernel_engineers_write(string text, ulong? expected) => Assert.Equal(expected, Hex.TryParse(text));
}
