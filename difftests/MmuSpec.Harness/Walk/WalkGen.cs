using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>
/// Generators for guest page-table forests and the operations a guest runs over them. FsCheck
/// draws a seed and a size; a small deterministic builder (<see cref="ForestBuilder"/>) turns them
/// into a case, so every case is replayable from FsCheck's (seed, gamma, size). Weights favour
/// what finds bugs: most accesses hit a built path, tables are shared between parents with
/// different rights, some entries carry reserved or ignored bits, some tables lie outside memory.
/// </summary>
public static class WalkGen
{
    /// <summary>Guest memory of every case: tables live in two memslots with a hole between them.</summary>
    public static readonly ImmutableArray<Memslot> Slots = ImmutableArray.Create(new Memslot(0x0, 0x40), new Memslot(0x100, 0x10));

    /// <summary>A case in any paging mode.</summary>
    public static Gen<WalkCase> Case() =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, mode: null)));

    /// <summary>A case in the given paging mode (the mode may still change mid-sequence).</summary>
    public static Gen<WalkCase> Case(PagingMode mode) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, mode)));

    public static Arbitrary<WalkCase> Arbitrary() => Arb.From(Case(), WalkShrink.Candidates);
    public static Arbitrary<WalkCase> Arbitrary(PagingMode mode) => Arb.From(Case(mode), WalkShrink.Candidates);

    /// <summary>Builds the case for a seed; <paramref name="size"/> (FsCheck's, 0..100) scales the number of paths and ops.</summary>
    public static WalkCase Build(int seed, int size, PagingMode? mode)
    {
        var rng = new Random(seed);
        var controls = GenControls(rng, mode ?? (PagingMode)rng.Next(4));
        var forest = new ForestBuilder(rng, controls);
        forest.Grow(paths: 1 + rng.Next(2 + size / 8));
        // Rarely a PAE PDPTE with a reserved bit: the boot's CR3 load itself raises #GP (no op runs).
        if (forest.BootControls.Mode == PagingMode.Pae && rng.Next(40) == 0) forest.ReservedPdpte();
        var setup = forest.SetupWrites();   // before the ops: entry edits must not leak into the boot image
        int opCount = 1 + rng.Next(1 + Math.Max(4, size));
        var ops = ImmutableArray.CreateBuilder<Op>(opCount);
        for (int i = 0; i < opCount; i++) ops.Add(forest.NextOp(ref controls));
        return new WalkCase(Slots, forest.BootControls, forest.Cr3, setup, ops.ToImmutable());
    }

    static readonly int[] MaxPhyAddrs = [36, 39, 40, 42, 46, 48, 52];

    /// <summary>genControls: every flag is a coin toss, so each combination is common.</summary>
    internal static PagingControls GenControls(Random rng, PagingMode mode) => new(
        mode,
        cr0Wp: Coin(rng), cr4Pse: rng.Next(4) != 0, cr4Smep: Coin(rng), cr4Smap: Coin(rng),
        cr4Pke: Coin(rng), eferNxe: rng.Next(4) != 0, eflagsAc: Coin(rng),
        pkru: GenPkru(rng), maxPhyAddr: MaxPhyAddrs[rng.Next(MaxPhyAddrs.Length)]);

    /// <summary>PKRU: zero, all-deny, all write-deny, or random bits (each key's AD/WD independently).</summary>
    internal static uint GenPkru(Random rng) => rng.Next(5) switch
    {
        0 => 0,
        1 => 0x5555_5554,    // AD for every key but 0
        2 => 0xAAAA_AAA8,    // WD for every key but 0: reads pass, writes fault with PK
        _ => (uint)rng.NextInt64(0, 1L << 32),
    };

    internal static bool Coin(Random rng) => rng.Next(2) == 0;
}

/// <summary>
/// Builds one guest page-table forest in the case's memslots and then generates operations over
/// it. Tracks every entry written so later ops can edit real entries.
/// </summary>
internal sealed class ForestBuilder
{
    readonly Random rng;
    readonly Dictionary<ulong, ulong> entries = new();      // entry gpa -> current value
    readonly Dictionary<ulong, ulong> original = new();     // entry gpa -> value at boot
    readonly List<ulong> entryOrder = new();                 // setup write order
    readonly List<ulong> freePages;                          // table pages not used yet
    readonly List<(ulong Page, int Level)> tables = new();   // table pages and the level they were built for
    readonly List<ulong> pathGvas = new();                   // linear addresses whose path was built
    readonly IReadOnlyList<(ulong BaseGfn, ulong Pages)> dataRanges;   // where leaves should usually point
    readonly PagingMode bootMode;
    readonly int entryBytes;

    /// <param name="tableSlots">Where table pages may go (default: the walk cases' memslots).</param>
    /// <param name="dataRanges">Gfn ranges that leaves should usually point into (default: anywhere).</param>
    public ForestBuilder(Random rng, PagingControls controls, IEnumerable<Memslot>? tableSlots = null, IReadOnlyList<(ulong BaseGfn, ulong Pages)>? dataRanges = null)
    {
        this.rng = rng;
        this.dataRanges = dataRanges ?? [];
        BootControls = controls;
        bootMode = controls.Mode;
        entryBytes = bootMode.EntryBytes();
        freePages = (tableSlots ?? WalkGen.Slots).SelectMany(s => Enumerable.Range(0, (int)s.Pages).Select(i => (s.BaseGfn + (ulong)i) << 12))
            .OrderBy(_ => rng.Next()).ToList();

        ulong root = TakePage();
        tables.Add((root, bootMode.RootLevel()));
        // PAE's PDPT is 32 bytes at CR3 bits 31:5: usually at the start of a page, sometimes not.
        Cr3 = bootMode == PagingMode.Pae && rng.Next(4) == 0 ? root + 32UL * (ulong)rng.Next(128) : root;
        if (bootMode.IsLongMode() && rng.Next(4) == 0) Cr3 |= (ulong)rng.Next(0x1000) & 0x18;  // PWT/PCD, ignored
    }

    public PagingControls BootControls { get; }
    public ulong Cr3 { get; private set; }

    /// <summary>The boot image; also remembers it so that later edits can restore entries.</summary>
    public ImmutableArray<Op.WriteGuest> SetupWrites()
    {
        foreach (var (gpa, value) in entries) original[gpa] = value;
        return entryOrder.Select(g => new Op.WriteGuest(g, entries[g], entryBytes)).ToImmutableArray();
    }

    ulong TakePage()
    {
        ulong p = freePages[^1];
        freePages.RemoveAt(freePages.Count - 1);
        return p;
    }

    ulong RootTable => bootMode == PagingMode.Pae ? Cr3 & Bits.Range(31, 5) : Cr3 & ~0xFFFUL;

    /// <summary>PAE: a present PDPTE (made present if none is) gets a bit the PDPTE register reserves (2:1, 8:5 or MAXPHYADDR and up).</summary>
    public void ReservedPdpte()
    {
        var pdptes = Enumerable.Range(0, 4).Select(i => RootTable + 8UL * (ulong)i).ToList();
        var present = pdptes.Where(g => entries.TryGetValue(g, out ulong v) && Bits.Test(v, 0)).ToList();
        ulong gpa = present.Count > 0 ? present[rng.Next(present.Count)] : pdptes[rng.Next(4)];
        int[] reserved = [1, 2, 5, 6, 7, 8, BootControls.MaxPhyAddr, 63];
        Set(gpa, entries.GetValueOrDefault(gpa) | 1 | 1UL << reserved[rng.Next(reserved.Length)]);
    }

    /// <summary>genGva: a linear address of the mode's width, canonical.</summary>
    ulong RandomGva()
    {
        int bits = bootMode.LinearAddressBits();
        ulong gva = (ulong)rng.NextInt64() & Bits.Range(bits - 1, 0);
        // Keep user-ish and kernel-ish halves both common; sign-extend to canonical.
        if (bits < 64 && Bits.Test(gva, bits - 1) && bootMode.IsLongMode()) gva |= Bits.Range(63, bits);
        return gva;
    }

    /// <summary>Builds <paramref name="paths"/> translations from the root down, sharing tables as it goes.</summary>
    public void Grow(int paths)
    {
        for (int p = 0; p < paths; p++)
        {
            ulong gva = RandomGva();
            pathGvas.Add(gva);
            ulong table = RootTable;
            int level = bootMode.RootLevel();
            while (true)
            {
                ulong entryGpa = table + (ulong)(PagingLevels.Index(bootMode, level, gva) * entryBytes);
                if (entries.TryGetValue(entryGpa, out ulong existing))
                {
                    if (!Bits.Test(existing, 0) || level == 1 || Bits.Test(existing, 7)) break;
                    table = existing & Bits.Range(bootMode == PagingMode.Bits32 ? 31 : 51, 12);
                    level--;
                    continue;
                }
                ulong value = NewEntry(level, out ulong? childTable);
                Set(entryGpa, value);
                if (childTable is not { } child) break;
                table = child;
                level--;
            }
        }
    }

    void Set(ulong gpa, ulong value)
    {
        if (!entries.ContainsKey(gpa)) entryOrder.Add(gpa);
        entries[gpa] = value;
    }

    /// <summary>genPte: an entry for <paramref name="level"/>: a table pointer (new or shared), a large page, a leaf, or junk.</summary>
    ulong NewEntry(int level, out ulong? childTable)
    {
        childTable = null;
        bool paePdpte = bootMode == PagingMode.Pae && level == 3;
        bool canBeLarge = level == 2 || (level == 3 && bootMode.IsLongMode());
        if (level > 1 && !(canBeLarge && rng.Next(4) == 0))
        {
            ulong child = ChooseChildTable(level - 1);
            ulong flags = paePdpte ? 1UL | (rng.Next(4) == 0 ? 0x18UL : 0) : TableFlags(level);
            if (Bits.Test(flags, 0)) childTable = child;
            return child | flags;
        }
        return LeafEntry(level);
    }

    /// <summary>
    /// A table for the next level: usually a fresh page, often an existing table of the same level
    /// (one table reached through two parents with different rights), rarely any table at all
    /// (a self-map or a level mix-up), and sometimes a page outside every memslot.
    /// </summary>
    ulong ChooseChildTable(int level)
    {
        int roll = rng.Next(100);
        var sameLevel = tables.Where(t => t.Level == level).ToList();
        if (roll < 20 && sameLevel.Count > 0) return sameLevel[rng.Next(sameLevel.Count)].Page;
        // Any table, but never PAE's PDPT page: entries written there would land on the PDPTEs
        // and make the boot-time CR3 load fault (edits and MOV CR3 ops cover that case).
        var anyLevel = tables.Where(t => !(bootMode == PagingMode.Pae && t.Page == RootTable)).ToList();
        if (roll < 23 && anyLevel.Count > 0) return anyLevel[rng.Next(anyLevel.Count)].Page;
        if (roll < 25) return 0x80UL << 12;   // in the hole between the memslots
        if (freePages.Count == 0) return sameLevel.Count > 0 ? sameLevel[rng.Next(sameLevel.Count)].Page : 0x80UL << 12;
        ulong page = TakePage();
        tables.Add((page, level));
        return page;
    }

    ulong TableFlags(int level) => CommonFlags(leaf: false) | MaybeReservedBit(level, large: false);

    ulong LeafEntry(int level)
    {
        bool large = level > 1;
        var size = large ? PagingLevels.PageSizeAt(bootMode, level) : PageSize.Size4K;
        ulong frame = RandomFrame(size);
        ulong flags = CommonFlags(leaf: true) | MaybeReservedBit(level, large);
        if (large) flags |= 1UL << PagingEntry.PageSizeBit;
        if (bootMode == PagingMode.Bits32 && large && rng.Next(3) == 0)
            flags |= ((ulong)rng.Next(256)) << 13;                // PSE-36 high address bits (some reserved)
        if (bootMode.IsLongMode() && rng.Next(3) == 0)
            flags |= ((ulong)rng.Next(16)) << PagingEntry.ProtectionKeyShift;
        return frame | flags;
    }

    ulong RandomFrame(PageSize size)
    {
        if (dataRanges.Count > 0 && rng.Next(10) < 7)
        {
            // Into guest memory the MMU knows, so the final access maps (a TDP guest).
            var (baseGfn, pages) = dataRanges[rng.Next(dataRanges.Count)];
            ulong gfn = baseGfn + (ulong)rng.NextInt64(0, (long)pages);
            return (gfn << 12) & ~(size.Bytes() - 1);
        }
        int maxBits = bootMode == PagingMode.Bits32 ? 32 : Math.Min(BootControls.MaxPhyAddr, 40);
        ulong frame = (ulong)rng.NextInt64() & Bits.Range(maxBits - 1, size.Shift());
        // A misaligned large frame sets bits that the large page reserves.
        if (size != PageSize.Size4K && rng.Next(12) == 0) frame |= 1UL << (13 + rng.Next(size.Shift() - 13));
        return frame;
    }

    /// <summary>P, R/W, U/S, A, D, XD and ignored bits, each with a bias toward the common case.</summary>
    ulong CommonFlags(bool leaf)
    {
        ulong f = 0;
        if (rng.Next(100) < 95) f |= 1UL << PagingEntry.PresentBit;
        if (rng.Next(100) < 75) f |= 1UL << PagingEntry.WritableBit;
        if (rng.Next(100) < 75) f |= 1UL << PagingEntry.UserBit;
        if (rng.Next(100) < 40) f |= PagingEntry.Accessed;
        if (leaf && rng.Next(100) < 40) f |= PagingEntry.Dirty;
        if (rng.Next(100) < 15) f |= 0x18;                         // PWT/PCD
        if (rng.Next(100) < 10) f |= (ulong)rng.Next(8) << 9;       // AVL bits 11:9, ignored
        if (entryBytes == 8 && rng.Next(100) < 18) f |= 1UL << PagingEntry.XdBit;
        if (bootMode.IsLongMode() && rng.Next(100) < 5) f |= 1UL << (52 + rng.Next(7));   // ignored 58:52
        return f;
    }

    /// <summary>Sometimes a bit that is reserved at some level, MAXPHYADDR or mode (or merely suspicious).</summary>
    ulong MaybeReservedBit(int level, bool large)
    {
        if (rng.Next(100) >= 3) return 0;
        if (bootMode == PagingMode.Bits32) return large ? 1UL << (13 + rng.Next(9)) : 0;
        int m = BootControls.MaxPhyAddr;
        int[] candidates = [Math.Min(m, 51), 51, 62, 63, 7, 13, 20, 29, rng.Next(m, 52)];
        int bit = candidates[rng.Next(candidates.Length)];
        if (bit == 7 && level < 4) bit = 51;   // PS is only reserved in PML4E/PML5E
        return 1UL << bit;
    }

    // ---- operations ----

    /// <summary>genOp: mostly accesses, then entry edits, control changes and CR3 loads.</summary>
    public IReadOnlyList<ulong> PathGvas => pathGvas;

    public Op NextOp(ref PagingControls current)
    {
        int roll = rng.Next(100);
        if (roll < 58) return new Op.GuestAccess(RandomAccess(current));
        if (roll < 80 && entryOrder.Count > 0) return EditEntry();
        if (roll < 92)
        {
            current = ChangeControls(current);
            return new Op.SetControls(current);
        }
        return new Op.LoadCr3(NewCr3(current));
    }

    Access RandomAccess(PagingControls current)
    {
        ulong gva;
        if (pathGvas.Count > 0 && rng.Next(100) < 90)
            gva = (pathGvas[rng.Next(pathGvas.Count)] & ~0xFFFUL) | (uint)rng.Next(0x1000);
        else
            gva = RandomGva();
        if (!current.Mode.IsLongMode()) gva &= uint.MaxValue;
        else if (current.Mode == PagingMode.Long4 && bootMode == PagingMode.Long5)
            gva = (ulong)((long)(gva << 16) >> 16);              // keep most long4 addresses canonical
        if (current.Mode.IsLongMode() && rng.Next(100) < 4) gva ^= 1UL << (48 + rng.Next(15));   // non-canonical
        var type = (AccessType)rng.Next(3);
        var priv = rng.Next(100) switch { < 45 => Privilege.Supervisor, < 90 => Privilege.User, _ => Privilege.ImplicitSupervisor };
        if (type == AccessType.Fetch && priv == Privilege.ImplicitSupervisor) priv = Privilege.Supervisor;
        return new Access(gva, type, priv);
    }

    /// <summary>An edit of an existing entry: a flag flipped, a reserved bit, a new target table.</summary>
    Op EditEntry()
    {
        ulong gpa = entryOrder[rng.Next(entryOrder.Count)];
        ulong value = entries[gpa];
        int roll = rng.Next(100);
        if (roll < 45) value ^= 1UL << new[] { 0, 1, 2, 5, 6, 7 }[rng.Next(6)];
        else if (roll < 55 && entryBytes == 8) value ^= 1UL << PagingEntry.XdBit;
        else if (roll < 65) value |= MaybeReservedBitAlways();
        else if (roll < 75 && tables.Count > 0) value = (value & 0xFFF) | tables[rng.Next(tables.Count)].Page;
        else if (roll < 92) value = original[gpa];      // the guest puts the entry back
        else value = 0;
        entries[gpa] = value;
        return new Op.WriteGuest(gpa, value, entryBytes);
    }

    ulong MaybeReservedBitAlways()
    {
        if (entryBytes == 4) return 1UL << (13 + rng.Next(9));
        int m = BootControls.MaxPhyAddr;
        int[] candidates = [Math.Min(m, 51), 51, 62, 63, 7, 13, 20];
        return 1UL << candidates[rng.Next(candidates.Length)];
    }

    PagingControls ChangeControls(PagingControls c)
    {
        switch (rng.Next(12))
        {
            case 0: return c.WithCr0Wp(!c.Cr0Wp);
            case 1: return c.WithCr4Smep(!c.Cr4Smep);
            case 2: return c.WithCr4Smap(!c.Cr4Smap);
            case 3: return c.WithEflagsAc(!c.EflagsAc);
            case 4: return c.WithCr4Pke(!c.Cr4Pke);
            case 5: return c.WithEferNxe(!c.EferNxe);
            case 6: return c.WithCr4Pse(!c.Cr4Pse);
            case 7: case 8: return c.WithPkru(WalkGen.GenPkru(rng));
            case 9: return c.WithMaxPhyAddr(new[] { 36, 40, 46, 52 }[rng.Next(4)]);
            default:
                // A mode switch reinterprets the same tables (most paths stop translating), so
                // it is rare and usually a return to the mode the tables were built for.
                if (c.Mode != bootMode && rng.Next(2) == 0) return c.WithMode(bootMode);
                if (rng.Next(3) != 0) return c.WithPkru(WalkGen.GenPkru(rng));
                var modes = new[] { PagingMode.Bits32, PagingMode.Pae, PagingMode.Long4, PagingMode.Long5 };
                return c.WithMode(modes[rng.Next(modes.Length)]);
        }
    }

    ulong NewCr3(PagingControls c)
    {
        int roll = rng.Next(100);
        // Mostly the tables' own root (a flush-like reload); sometimes another table as a root, or a
        // page outside guest memory (PAE: the PDPTEs cannot be loaded, #GP; otherwise nothing translates).
        ulong cr3 = roll < 75 ? Cr3 : roll < 80 ? 0x80UL << 12 : tables[rng.Next(tables.Count)].Page;
        if (c.Mode == PagingMode.Pae && rng.Next(4) == 0) cr3 += 32UL * (ulong)rng.Next(128);
        if (c.Mode.IsLongMode() && roll >= 90) cr3 |= 1UL << rng.Next(c.MaxPhyAddr, 64);   // reserved: #GP
        return cr3;
    }
}
