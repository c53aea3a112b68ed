using System.CommandLine;
using System.Globalization;
using MmuSpec.Harness.Images;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Cli.Commands;

/// <summary>
/// <c>mmuspec synth-image</c> (developer tool): writes a sparse memory image holding a Linux-like
/// 4- or 5-level address space, to try <c>walk</c> and <c>mappings</c> on, or to time them.
/// </summary>
public static class SynthImageCommand
{
    public static Command Create()
    {
        var output = new Option<FileInfo>("--out") { Description = "image file to write", HelpName = "file", Required = true };
        var mode = Cli.Choice("--mode", "paging mode", "long5", "long4", "long5");
        var size = new Option<string>("--size") { Description = "image size (K/M/G suffixes are binary)", HelpName = "bytes", DefaultValueFactory = _ => "256M" };
        var pages4K = new Option<int>("--pages-4k") { Description = "4K pages (user text/heap/stack and vmalloc)", DefaultValueFactory = _ => 40000 };
        var pages2M = new Option<int>("--pages-2m") { Description = "2M pages (kernel text and data)", DefaultValueFactory = _ => 64 };
        var pages1G = new Option<int>("--pages-1g") { Description = "1G pages (direct map)", DefaultValueFactory = _ => 4 };
        var reserved = new Option<int>("--reserved") { Description = "leaf entries with a reserved bit (skipped by mappings)", DefaultValueFactory = _ => 2 };
        var seed = new Option<int>("--seed") { Description = "seed for the data frames", DefaultValueFactory = _ => 1 };

        var command = new Command("synth-image", "Write a synthetic Linux-like memory image (developer tool, for trying and timing walk and mappings).");
        foreach (var o in new Option[] { output, mode, size, pages4K, pages2M, pages1G, reserved, seed }) command.Add(o);
        command.SetAction(p =>
        {
            ulong bytes = ParseSize(p.GetValue(size)!) ?? throw new InputException($"--size: '{p.GetValue(size)}' is not a size (like 256M, 1G or 0x10000000)");
            foreach (var o in new[] { pages4K, pages2M, pages1G, reserved })
                if (p.GetValue(o) < 0) throw new InputException($"{o.Name} must not be negative");
            var m = PagingModes.Parse(p.GetValue(mode)!);
            SyntheticLayout layout;
            try
            {
                layout = SyntheticImage.Write(p.GetValue(output)!.FullName, m, bytes, p.GetValue(pages4K), p.GetValue(pages2M), p.GetValue(pages1G), p.GetValue(reserved), p.GetValue(seed));
            }
            catch (ArgumentException e) { throw new InputException(Messages.Of(e)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new InputException($"cannot write '{p.GetValue(output)}': {e.Message}"); }

            Console.WriteLine($"wrote {p.GetValue(output)}: {Hex.Size(layout.ImageBytes)} ({layout.ImageBytes} bytes), {layout.Mode.Name()}, CR3={Hex.Format(layout.Cr3)}, {layout.Tables} page-table pages");
            var table = new TextTable("region", "start", "pages", "size").AlignRight(2);
            foreach (var r in layout.Regions)
                table.Add(r.Region, Hex.Padded(r.Start, 16), r.Pages.ToString(CultureInfo.InvariantCulture), r.Size.Name());
            Console.WriteLine(table.Render("  "));
            Console.WriteLine($"try: mmuspec mappings --image {p.GetValue(output)} --cr3 {Hex.Format(layout.Cr3)} --mode {layout.Mode.Name()} --nxe --wp");
            return Cli.Ok;
        });
        return command;
    }

    static ulong? ParseSize(string text)
    {
        string t = text.Trim().ToUpperInvariant().TrimEnd('B').TrimEnd('I');
        int shift = t.EndsWith('K') ? 10 : t.EndsWith('M') ? 20 : t.EndsWith('G') ? 30 : 0;
        if (shift > 0) t = t[..^1];
        ulong? n = Hex.TryParse(t.StartsWith("0X", StringComparison.Ordinal) ? "0x" + t[2..] : t);
        return n is { } v && v <= (ulong.MaxValue >> shift) ? v << shift : null;
    }
}
