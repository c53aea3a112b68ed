using System.CommandLine;
using MmuSpec.Cli.Commands;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Cli;

/// <summary>
/// What a user pastes from a real guest's debugger reaches the walk unchanged: registers and
/// addresses are hex with or without 0x (QEMU's <c>info registers</c> prints <c>CR0=80050033</c>),
/// counts stay decimal, numbers wider than 64 bits say so, and the access words are one list.
/// </summary>
public sealed class GuestInputTests
{
    static ParseResult Walk(params string[] args) => WalkCommand.Create().Parse(args);

    static string Errors(ParseResult p) => string.Join(" | ", p.Errors.Select(e => e.Message));

    [Fact]
    public void Register_and_address_options_are_hex_with_or_without_0x()
    {
        // As QEMU's `info registers` prints them for a 4-level kernel.
        var p = Walk("--image", "guest.ram", "--cr3", "0000000002400000", "--cr0", "80050033", "--cr4", "00000000003406f0",
            "--efer", "0000000000000d01", "--rflags", "00000246", "--pkru", "55555554", "--gva", "ffffffff81000000");
        Assert.Empty(p.Errors);
        Assert.Equal(0x2400000UL, p.GetValue<ulong?>("--cr3"));
        Assert.Equal(0x80050033UL, p.GetValue<ulong?>("--cr0"));
        Assert.Equal(0x3406f0UL, p.GetValue<ulong?>("--cr4"));
        Assert.Equal(0xd01UL, p.GetValue<ulong?>("--efer"));
        Assert.Equal(0x246UL, p.GetValue<ulong?>("--rflags"));
        Assert.Equal(0x55555554UL, p.GetValue<ulong?>("--pkru"));
        Assert.Equal(0xffffffff81000000UL, p.GetValue<ulong?>("--gva"));

        var q = Walk("--image", "guest.ram", "--cr3", "0x2400000", "--cr0", "0X8005_0033", "--gva", "0x1000");
        Assert.Empty(q.Errors);
        Assert.Equal(0x2400000UL, q.GetValue<ulong?>("--cr3"));
        Assert.Equal(0x80050033UL, q.GetValue<ulong?>("--cr0"));
        Assert.Equal(0x1000UL, q.GetValue<ulong?>("--gva"));

        var mappings = MappingsCommand.Create().Parse(["--image", "guest.ram", "--cr3", "1a2b000", "--mode", "long4"]);
        Assert.Empty(mappings.Errors);
        Assert.Equal(0x1a2b000UL, mappings.GetValue<ulong?>("--cr3"));
    }

    [Fact]
    public void MAXPHYADDR_is_a_count_and_stays_decimal()
    {
        var p = Walk("--image", "guest.ram", "--cr3", "1000", "--mode", "long4", "--maxphyaddr", "40", "--gva", "0");
        Assert.Empty(p.Errors);
        Assert.Equal(40UL, p.GetValue<ulong?>("--maxphyaddr"));
    }

    [Theory]
    [InlineData("--cr3", "1_0000_0000_0000_0000", "--cr3: '1_0000_0000_0000_0000' is larger than 64 bits")]
    [InlineData("--gva", "0x10000000000000000", "--gva: '0x10000000000000000' is larger than 64 bits")]
    [InlineData("--maxphyaddr", "99999999999999999999", "--maxphyaddr: '99999999999999999999' is larger than 64 bits")]
    [InlineData("--cr0", "0x8005g033", "--cr0: '0x8005g033' is not a hex number (registers and addresses are hex, 0x optional: 80050033, 0x1000)")]
    [InlineData("--cr0", "-1", "--cr0: '-1' is not a hex number (registers and addresses are hex, 0x optional: 80050033, 0x1000)")]
    [InlineData("--maxphyaddr", "2e", "--maxphyaddr: '2e' is not a number (decimal, or hex as 0x1000)")]
    public void A_bad_number_says_what_is_wrong_with_it(string option, string value, string expected)
    {
        var args = new List<string> { "--image", "guest.ram", "--mode", "long4" };
        if (option != "--cr3") args.AddRange(["--cr3", "1000"]);
        if (option != "--gva") args.AddRange(["--gva", "0"]);
        args.AddRange([option, value]);
        Assert.Equal(expected, Errors(Walk([.. args])));
    }

    [Fact]
    public void JSON_register_and_address_strings_are_hex_too_and_integers_decimal()
    {
        // A string with a hex letter or 0x is hex in JSON as on the command line; a JSON integer is a number.
        var s = ScenarioJson.Parse("""{"cr0":"0x80050033","cr4":"3406f0","efer":"d01","cr3":"0x0000000000010000","maxphyaddr":"40","memory":{"10ff8":"0x11063","0x11ff0":"0x12063","0x12040":"10001e1"},"access":{"gva":"ffffffff81000123","type":"exec"}}""");
        Assert.Equal(0x10000UL, s.Cr3);
        Assert.Equal(PagingMode.Long4, s.Mode);
        Assert.True(s.Controls.EferNxe);
        Assert.Equal(40, s.Controls.MaxPhyAddr);
        Assert.Equal([new MemoryWord(0x10ff8, 0x11063), new MemoryWord(0x11ff0, 0x12063), new MemoryWord(0x12040, 0x10001e1)], s.Memory.ToArray());
        Assert.Equal(new Access(0xffffffff81000123, AccessType.Fetch, Privilege.Supervisor), s.Access);
        Assert.IsType<WalkResult.Translated>(SpecWalk.Run(s).Result);

        Assert.Equal(4096UL, ScenarioJson.Parse("""{"mode":"long4","cr3":4096}""").Cr3);
        Assert.Equal("cr3: 18446744073709551616 is larger than 64 bits",
            Assert.Throws<InputException>(() => ScenarioJson.Parse("""{"mode":"long4","cr3":18446744073709551616}""")).Message);
        Assert.Equal("cr3: '1_0000_0000_0000_f000' is larger than 64 bits",
            Assert.Throws<InputException>(() => ScenarioJson.Parse("""{"mode":"long4","cr3":"1_0000_0000_0000_f000"}""")).Message);
    }

    [Theory]
    [InlineData("""{"mode":"long4","cr3":"4096"}""", "cr3: '4096' is ambiguous in JSON: write \"0x4096\" for hex or the JSON integer 4096 for decimal")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"12040":"0x1"}}""", "memory: key '12040' is ambiguous in JSON: write \"0x12040\" for hex")]
    [InlineData("""{"mode":"long4","cr3":"0x1000","memory":{"0x1000":"80050033"}}""", "memory 0x1000: '80050033' is ambiguous in JSON: write \"0x80050033\" for hex or the JSON integer 80050033 for decimal")]
    public void A_JSON_string_of_decimal_digits_is_refused_not_read_one_way(string json, string expected)
    {
        // Earlier versions read "4096" as decimal, this one reads bare strings as hex: a file written for
        // either must not silently walk another address. Single digits mean the same both ways and pass.
        Assert.Equal(expected, Assert.Throws<InputException>(() => ScenarioJson.Parse(json)).Message);
        Assert.Equal(7UL, ScenarioJson.Parse("""{"mode":"long4","cr3":"7"}""").Cr3);
    }

    [Fact]
    public void The_access_words_are_one_list_for_the_command_line_and_JSON()
    {
        foreach (var (word, type) in ScenarioJson.AccessTypeWords)
        {
            var p = Walk("--scenario", "x.json", "--access", word);
            Assert.True(p.Errors.Count == 0, $"--access {word}: {Errors(p)}");
            Assert.Equal(type, ScenarioJson.ParseAccessType(p.GetValue<string>("--access")!, "--access"));
            Assert.Equal(type, ScenarioJson.Parse("{\"mode\":\"long4\",\"cr3\":\"0x1000\",\"access\":{\"gva\":\"0x0\",\"type\":\"" + word + "\"}}").Access!.Type);
        }
        Assert.Contains(ScenarioJson.AccessTypeWords, w => w.Word == "exec");
        Assert.Equal("--access: unknown value 'run' (expected read, r, write, w, fetch, exec, x)", Errors(Walk("--scenario", "x.json", "--access", "run")));
    }
}
