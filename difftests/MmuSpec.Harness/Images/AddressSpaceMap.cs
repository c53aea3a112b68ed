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
    /// <summary>Tables referenced by a present entry but outside guest memory (beyond the image).</summary>
    public long TablesOutsideMemory { get; internal set; }
    public (string Name, ulong Gpa, ulong Table)? FirstOutside { get; internal set; }
    /// <summary>Tables read (each visit counts: a table reached through two parents is read twice).</summary>
    public long TablesRead { get; internal set; }
    /// <summary>The enumeration stopped early (the consumer asked it to, e.g. --limit).</summary>
    public bool Truncated { get; internal set; }
}

/// <summary>
/// Every present leaf translation of an address space, in ascending virtual-address order, found by a
/// depth-first walk of the paging structures from CR3 — a debugger's page-table dump. Each entry is
/// judged with the spec's own rules (<see cref="PagingLevels"/> for indexing, what maps a page and
/// frame addresses; <see cref="ReservedBits"/> for reserved bits; <see cref="PagingEntry"/> for
/// flags), and the rights are combined the way <see cref="PageWalk"/> combines them (SDM §4.6).
/// Nothing is coalesced: one line per leaf entry.
/// </summary>
public sealed class AddressSpaceMap
{
    readonly CpuState cpu;
    readonly GuestMemory memory;
    readonly PagingControls c;
    readonly PagingMode mode;
    readonly int entryBytes;
    readonly Func<Mapping, bool> emit;
    readonly MapStats stats = new();
    bool stopped;

    AddressSpaceMap(CpuState cpu, GuestMemory memory, Func<Mapping, bool> emit)
    {
        this.cpu = cpu; this.memory = memory; this.emit = emit;
        c = cpu.Controls; mode = c.Mode; entryBytes = mode.EntryBytes();
    }

    /// <summary>
    /// Calls <paramref name="emit"/> for each mapping until it returns false. The root table itself
    /// must be in guest memory (an <see cref="InputException"/> otherwise, naming the image's length).
    /// </summary>
    public static MapStats Enumerate(CpuState cpu, GuestMemory memory, Func<Mapping, bool> emit)
    {
        var map = new AddressSpaceMap(cpu, memory, emit);
        map.Run();
        return map.stats;
    }

    /// <summary>All mappings as a list (for tests and small address spaces).</summary>
    public static (List<Mapping> Mappings, MapStats Stats) List(CpuState cpu, GuestMemory memory, int limit = int.MaxValue)
    {
        var list = new List<Mapping>();
        var stats = Enumerate(cpu, memory, m => { list.Add(m); return list.Count < limit; });
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
                if (!pdpte.Present) continue;
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

            bool mapsPage = PagingLevels.MapsPage(c, level, entry);
            ulong reserved = raw & ReservedBits.Mask(c, level, mapsPage);
            if (reserved != 0)
            {
                stats.ReservedEntries++;
                stats.FirstReserved ??= (name, entryGpa, raw, reserved);
                continue;
            }

            var folded = PageWalk.FoldRights(c, rights, entry);
            ulong va = vaBase | ((ulong)i << shift);
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
