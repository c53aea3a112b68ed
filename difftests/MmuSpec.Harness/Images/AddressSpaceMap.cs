using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Images;

/// <summary>One present leaf translation: a page of <see cref="Size"/> at <see cref="Virtual"/> (canonical).</summary>
/// <param name="Rights">U/S, R/W and XD combined over every level, as the spec combines them for a walk; the leaf's key with CR4.PKE.</param>
/// <param name="Level">1 = PTE ... 3 = PDPTE (the level whose entry maps the page).</param>
/// <param name="EntryGpa">Where the leaf entry lives.</param>
public sealed record Mapping(ulong Virtual, PageSize Size, ulong Physical, TranslationRights Rights, int Level, string EntryName, ulong EntryGpa, PagingEntry Leaf)
{
    /// <summary>The last byte of the page (inclusive, so the top page of the address space does not wrap).</summary>
    public ulong VirtualLast => Virtual + (Size.Bytes() - 1);
}

/// <summary>What the enumeration skipped or could not read.</summary>
public sealed class MapStats
{
    public long Mappings { get; internal set; }
    public Dictionary<PageSize, long> BySize { get; } = new();
    public ulong BytesMapped { get; internal set; }
    /// <summary>Present entries skipped because they set reserved bits (a walk through them would #PF with RSVD=1).</summary>
    public long ReservedEntries { get; internal set; }
    /// <summary>The first such entry: (name, gpa, raw, reserved bits).</summary>
    public (string Name, ulong Gpa, ulong Raw, ulong Reserved)? FirstReserved { get; internal set; }
    /// <summary>Skipped entries per reserved bit set (an entry with two such bits counts under both).</summary>
    public SortedDictionary<int, long> ReservedByBit { get; } = new();
    /// <summary>Tables referenced by a present entry but outside guest memory (beyond the image).</summary>
    public long TablesOutsideMemory { get; internal set; }
    public (string Name, ulong Gpa, ulong Table)? FirstOutside { get; internal set; }
    /// <summary>Tables read (each visit counts: a table reached through two parents is read twice).</summary>
    public long TablesRead { get; internal set; }
    /// <summary>The enumeration stopped early (the consumer asked it to, e.g. --limit).</summary>
    public bool Truncated { get; internal set; }

    /// <summary>More entries than this skipped for one reserved bit look like wrong controls, not a guest's doing.</summary>
    public const long SuspiciousReservedCount = 3;

    /// <summary>
    /// Warnings for a dump that skipped many entries for one reserved bit, naming the likely cause:
    /// most often a guest that sets XD everywhere, dumped with EFER.NXE=0 because only --mode was given.
    /// </summary>
    public IEnumerable<string> Warnings(PagingControls c)
    {
        foreach (var (bit, count) in ReservedByBit)
        {
            if (count <= SuspiciousReservedCount) continue;
            string entries = $"{count} entries skipped because they set bit {bit}";
            if (bit == PagingEntry.XdBit && !c.EferNxe && c.Mode != PagingMode.Bits32)
                yield return $"{entries} (XD), reserved because EFER.NXE=0: did you mean --nxe, or the raw registers --cr0/--cr4/--efer as the guest's debugger prints them (EFER bit 11 is NXE)?";
            else if (bit >= c.MaxPhyAddr && bit <= 51)
                yield return $"{entries}, reserved because MAXPHYADDR is {c.MaxPhyAddr}: did you mean --maxphyaddr {bit + 1} or more (the guest CPU's)?";
            else
                yield return $"{entries}, reserved in {c.Mode.Name()} paging with these controls: check --mode and the registers";
        }
    }
}

/// <summary>A linear-address range [<see cref="Start"/>, <see cref="End"/>) (End exclusive; null: to the top).</summary>
public sealed record AddressRange(ulong Start, ulong? End)
{
    /// <summary>True when the inclusive range [first, last] overlaps this one.</summary>
    public bool Overlaps(ulong first, ulong last) => last >= Start && (End is not { } e || first < e);

    /// <summary>"START-END" in hex, 0x optional, END exclusive ("ffffffff81000000-ffffffff82000000"); END may be empty (to the top).</summary>
    public static AddressRange Parse(string text, string what)
    {
        int dash = text.IndexOf('-', StringComparison.Ordinal);
        if (dash < 0) throw new InputException($"{what}: '{text}' is not a range (write START-END in hex, END exclusive: ffffffff81000000-ffffffff82000000)");
        ulong start = Hex.ParseHex(text[..dash], what);
        string rest = text[(dash + 1)..].Trim();
        ulong? end = rest.Length == 0 ? null : Hex.ParseHex(rest, what);
        if (end is { } e && e <= start) throw new InputException($"{what}: the end {Hex.Format(e)} is not above the start {Hex.Format(start)} (END is exclusive)");
        return new AddressRange(start, end);
    }
}

/// <summary>
/// Contiguous mappings with the same effective rights merged into one run, as QEMU's <c>info mem</c>
/// shows an address space: the virtual range, its size, the rights, and how many leaf entries map it.
/// </summary>
public sealed record MappingRun(ulong Virtual, ulong Last, TranslationRights Rights, long Mappings, ulong? Physical)
{
    /// <summary>Bytes in the run (0 for the whole 2^64, which no mode can map).</summary>
    public ulong Bytes => Last - Virtual + 1;

    /// <summary>Feeds mappings in ascending order; calls <paramref name="emit"/> with each finished run.</summary>
    public sealed class Builder(Func<MappingRun, bool> emit)
    {
        MappingRun? open;

        /// <summary>Adds a mapping; false when the consumer asked to stop.</summary>
        public bool Add(Mapping m)
        {
            if (open is { } r && r.Last != ulong.MaxValue && r.Last + 1 == m.Virtual && r.Rights == m.Rights)
            {
                // The physical start is kept only while the run is physically contiguous too.
                ulong? physical = r.Physical is { } p && p + r.Bytes == m.Physical ? p : null;
                open = r with { Last = m.VirtualLast, Mappings = r.Mappings + 1, Physical = physical };
                return true;
            }
            bool more = Flush();
            open = new MappingRun(m.Virtual, m.VirtualLast, m.Rights, 1, m.Physical);
            return more;
        }

        /// <summary>Emits the run under way, if any.</summary>
        public bool Flush()
        {
            if (open is not { } r) return true;
            open = null;
            return emit(r);
        }
    }
}

/// <summary>
/// Every present leaf translation of an address space, in ascending virtual-address order, found by a
/// depth-first walk of the paging structures from CR3 — a debugger's page-table dump. Each entry is
/// judged with the spec's own rules (<see cref="PagingLevels"/> for indexing, what maps a page and
/// frame addresses; <see cref="ReservedBits"/> for reserved bits; <see cref="PagingEntry"/> for
/// flags), and the rights are combined the way <see cref="PageWalk"/> combines them (SDM §4.6).
/// One line per leaf entry; <see cref="MappingRun"/> coalesces them.
/// </summary>
public sealed class AddressSpaceMap
{
    readonly CpuState cpu;
    readonly GuestMemory memory;
    readonly PagingControls c;
    readonly PagingMode mode;
    readonly int entryBytes;
    readonly Func<Mapping, bool> emit;
    readonly AddressRange? range;
    readonly MapStats stats = new();
    bool stopped;

    AddressSpaceMap(CpuState cpu, GuestMemory memory, Func<Mapping, bool> emit, AddressRange? range)
    {
        this.cpu = cpu; this.memory = memory; this.emit = emit; this.range = range;
        c = cpu.Controls; mode = c.Mode; entryBytes = mode.EntryBytes();
    }

    /// <summary>
    /// Calls <paramref name="emit"/> for each mapping until it returns false. The root table itself
    /// must be in guest memory (an <see cref="InputException"/> otherwise, naming the image's length).
    /// With <paramref name="range"/>, only mappings that overlap it (listed whole); tables wholly
    /// outside it are not read.
    /// </summary>
    public static MapStats Enumerate(CpuState cpu, GuestMemory memory, Func<Mapping, bool> emit, AddressRange? range = null)
    {
        var map = new AddressSpaceMap(cpu, memory, emit, range);
        map.Run();
        return map.stats;
    }

    /// <summary>Calls <paramref name="emit"/> for each run of contiguous mappings with the same rights (<see cref="MappingRun"/>) until it returns false.</summary>
    public static MapStats EnumerateRuns(CpuState cpu, GuestMemory memory, Func<MappingRun, bool> emit, AddressRange? range = null)
    {
        var runs = new MappingRun.Builder(emit);
        var stats = Enumerate(cpu, memory, runs.Add, range);
        if (!stats.Truncated) runs.Flush();   // the last run; reaching the limit with it leaves nothing out
        return stats;
    }

    /// <summary>All mappings as a list (for tests and small address spaces).</summary>
    public static (List<Mapping> Mappings, MapStats Stats) List(CpuState cpu, GuestMemory memory, int limit = int.MaxValue, AddressRange? range = null)
    {
        var list = new List<Mapping>();
        var stats = Enumerate(cpu, memory, m => { list.Add(m); return list.Count < limit; }, range);
        return (list, stats);
    }

    void Run()
    {
        if (mode == PagingMode.Pae)
        {
            // §4.4.1: the PDPTEs are registers loaded (and checked) at MOV CR3; they carry no rights.
            for (int i = 0; i < 4 && !stopped; i++)
            {
                var pdpte = new PagingEntry(cpu.Pdptes[i]);
                if (!pdpte.Present || !InRange((ulong)i << 30, 30)) continue;
                Table(2, PagingLevels.FrameAddress(c, 3, pdpte, mapsPage: false), (ulong)i << 30, TranslationRights.All, "PDPTE", null);
            }
            return;
        }
        CheckRoot(cpu, memory);
        Table(mode.RootLevel(), cpu.RootTableAddress, 0, TranslationRights.All, "CR3", null);
    }

    /// <summary>The root table must be in guest memory: otherwise there is no address space to list (bad input).</summary>
    public static void CheckRoot(CpuState cpu, GuestMemory memory)
    {
        var mode = cpu.Controls.Mode;
        if (mode == PagingMode.Pae) return;   // the PDPTEs were loaded (and checked) at MOV CR3
        ulong root = cpu.RootTableAddress;
        if (memory.Read(root, mode.EntryBytes()) is not null) return;
        string what = PagingLevels.EntryName(mode, mode.RootLevel());
        throw new InputException(memory.Image is { } image
            ? Scenario.TooShort(image, what, root)
            : $"cr3 {Hex.Format(cpu.Cr3)}: the root table at gpa {Hex.Format(root)} is outside guest memory");
    }

    void Table(int level, ulong table, ulong vaBase, TranslationRights rights, string parentName, ulong? parentGpa)
    {
        stats.TablesRead++;
        int count = 4096 / entryBytes;
        int shift = LevelShift(mode, level);
        string name = PagingLevels.EntryName(mode, level);
        for (int i = 0; i < count && !stopped; i++)
        {
            ulong entryGpa = table + (ulong)(i * entryBytes);
            if (memory.Read(entryGpa, entryBytes) is not { } raw)
            {
                stats.TablesOutsideMemory++;
                stats.FirstOutside ??= (parentName, parentGpa ?? cpu.Cr3, table);
                return;
            }
            var entry = new PagingEntry(raw);
            if (!entry.Present) continue;
            ulong va = vaBase | ((ulong)i << shift);
            if (!InRange(va, shift)) continue;

            bool mapsPage = PagingLevels.MapsPage(c, level, entry);
            ulong reserved = raw & ReservedBits.Mask(c, level, mapsPage);
            if (reserved != 0)
            {
                stats.ReservedEntries++;
                stats.FirstReserved ??= (name, entryGpa, raw, reserved);
                for (ulong bits = reserved; bits != 0; bits &= bits - 1)
                {
                    int bit = System.Numerics.BitOperations.TrailingZeroCount(bits);
                    stats.ReservedByBit[bit] = stats.ReservedByBit.GetValueOrDefault(bit) + 1;
                }
                continue;
            }

            var folded = PageWalk.FoldRights(c, rights, entry);
            ulong frame = PagingLevels.FrameAddress(c, level, entry, mapsPage);
            if (!mapsPage)
            {
                Table(level - 1, frame, va, folded, name, entryGpa);
                continue;
            }
            if (mode.IsLongMode() && c.Cr4Pke) folded = folded.WithProtectionKey(entry.ProtectionKey);
            var size = PagingLevels.PageSizeAt(mode, level);
            stats.Mappings++;
            stats.BySize[size] = stats.BySize.GetValueOrDefault(size) + 1;
            stats.BytesMapped += size.Bytes();
            if (!emit(new Mapping(Canonical(va), size, frame, folded, level, name, entryGpa, entry)))
            {
                stopped = true;
                stats.Truncated = true;
            }
        }
    }

    /// <summary>Whether the 2^<paramref name="shift"/> bytes an entry covers from <paramref name="va"/> overlap the range.</summary>
    bool InRange(ulong va, int shift)
    {
        if (range is null) return true;
        ulong first = Canonical(va);   // the span shares its top bit, so it stays contiguous once sign-extended
        return range.Overlaps(first, first + ((1UL << shift) - 1));
    }

    /// <summary>
    /// The leaf's flags as a debugger shows them: P, W/R, U/S, PWT, PCD, A, D, PS, PAT, G, XD and the
    /// protection key (SDM Tables 4-6..4-20: PAT is bit 7 of a PTE, bit 12 of a large-page entry;
    /// G exists only in leaves; XD only in 8-byte entries; the key in IA-32e leaves with CR4.PKE).
    /// </summary>
    public static string LeafFlags(PagingControls c, Mapping m)
    {
        ulong raw = m.Leaf.Raw;
        bool wide = c.Mode.EntryBytes() == 8;
        var f = new List<string> { "P", (raw & 2) != 0 ? "W" : "R", (raw & 4) != 0 ? "U" : "S" };
        if ((raw & (1UL << 3)) != 0) f.Add("PWT");
        if ((raw & (1UL << 4)) != 0) f.Add("PCD");
        if (m.Leaf.IsAccessed) f.Add("A");
        if (m.Leaf.IsDirty) f.Add("D");
        bool large = m.Level > 1;
        if (large) f.Add("PS");
        if ((raw & (1UL << (large ? 12 : 7))) != 0) f.Add("PAT");
        if ((raw & (1UL << 8)) != 0) f.Add("G");
        if (wide && m.Leaf.Xd) f.Add("XD");
        if (c.Mode.IsLongMode() && c.Cr4Pke) f.Add($"PK={m.Leaf.ProtectionKey}");
        return string.Join(' ', f);
    }

    /// <summary>The lowest linear-address bit a level's index covers (the spec's rule).</summary>
    public static int LevelShift(PagingMode mode, int level) => PagingLevels.IndexShift(mode, level);

    /// <summary>Sign-extends from the top linear-address bit in IA-32e paging (§3.3.7.1); 32-bit addresses are as they are.</summary>
    ulong Canonical(ulong va)
    {
        if (!mode.IsLongMode()) return va;
        int unused = 64 - mode.LinearAddressBits();
        return (ulong)((long)(va << unused) >> unused);
    }
}
