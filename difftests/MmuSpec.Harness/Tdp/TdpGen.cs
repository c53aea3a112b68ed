using System.Collections.Immutable;
using FsCheck;
using FsCheck.Fluent;
using MmuSpec.Harness.Walk;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Tdp;

/// <summary>
/// Generators for TDP operation sequences. FsCheck draws a seed and a size; a deterministic
/// builder turns them into a case (so every case replays from FsCheck's seed). The builder keeps
/// a rough model of the memslots so that most operations are valid and most accesses land in a
/// slot, and it favours the interleavings that break MMUs: faults in a range then a zap of an
/// overlapping range, dirty logging toggled around faults, slots moved or deleted under live
/// mappings, shared and private gpas of the same gfn, policy changes between faults. For the TLB
/// flush check it also writes short huge-page scenarios (<see cref="TdpCaseBuilder.HugePageScenario"/>):
/// zaps that start or end inside a 2 MiB or 1 GiB leaf, dirty logging switched on over huge
/// mappings (and off and on again), and tables of 4 KiB leaves replaced by a huge leaf.
/// </summary>
public static class TdpGen
{
    /// <param name="notifiers">Also MMU-notifier invalidations (TdpGen.Notifier.cs); off, the draws are exactly those without the option.</param>
    public static Gen<TdpCase> Case(VmConfig config, bool notifiers = false) =>
        Gen.Sized(size => Gen.Choose(0, int.MaxValue).Select(seed => Build(seed, size, config, notifiers)));

    public static Arbitrary<TdpCase> Arbitrary(VmConfig config, bool notifiers = false) => Arb.From(Case(config, notifiers), TdpShrink.Candidates);

    public static TdpCase Build(int seed, int size, VmConfig config, bool notifiers = false)
    {
        var rng = new Random(seed);
        // The aging property (a config that tracks A/D) draws each case's VM first; the others draw as before.
        if (config.AccessedDirty != AccessedDirty.Untracked) config = AgingConfig(rng);
        var b = new TdpCaseBuilder(rng, config, notifiers);
        int slots = 1 + b.Rng.Next(3);
        for (int i = 0; i < slots; i++) b.Add(b.NewSlot(i));
        // Most cases also run a guest with its own page tables in its own memory.
        bool guest = b.Rng.Next(10) < 6;
        if (guest) b.BuildGuest();
        int count = 4 + b.Rng.Next(4 + Math.Max(4, size));
        for (int i = 0; i < count; i++) b.Add(guest && b.Rng.Next(10) < 4 ? b.NextGuestOp() : b.NextOp());
        while (b.HasPending) b.Add(b.NextOp());       // the rest of a scenario that was under way
        return new TdpCase(config, b.Ops.ToImmutable());
    }

    /// <summary>An aging case's VM: either format, hardware A/D mostly on, sometimes a shared bit.</summary>
    static VmConfig AgingConfig(Random rng) => new(rng.Next(2) == 0 ? TdpFormat.Ept : TdpFormat.Stage2,
        rng.Next(4) == 0 ? 47 : null, rng.Next(3) == 0 ? AccessedDirty.Disabled : AccessedDirty.Enabled);
}

internal sealed partial class TdpCaseBuilder(Random rng, VmConfig config, bool notifiers = false)
{
    public Random Rng => rng;
    public ImmutableArray<TdpOp>.Builder Ops { get; } = ImmutableArray.CreateBuilder<TdpOp>();

    // The builder's idea of the slots (it may be wrong after a rejected op; that is fine).
    readonly Dictionary<int, (ulong Base, ulong Pages)> slots = new();
    /// <summary>Host frames of every slot created so far (deleted ones too: their frames were freed, so adjacency still matters).</summary>
    readonly List<(ulong HostBase, ulong Pages)> hostRanges = new();
    readonly List<ulong> recentGfns = new();
    readonly HashSet<int> logging = new();

    // The remaining operations of a scenario, handed out by NextOp before anything else.
    readonly Queue<TdpOp> pending = new();

    public bool HasPending => pending.Count > 0;

    /// <summary>Where slots go: low memory, around 4 GiB, and high up, in gfns.</summary>
    static readonly ulong[] Regions = [0x0, 0x100, 0x1000, 0x10_0000, 0x4_0000, 0x80_0000];

    public void Add(TdpOp op)
    {
        Ops.Add(op);
        switch (op)
        {
            case TdpOp.CreateSlot c when !slots.ContainsKey(c.Id): slots[c.Id] = (c.BaseGfn, c.Pages); hostRanges.Add((c.HostPfnBase, c.Pages)); break;
            case TdpOp.DeleteSlot d: slots.Remove(d.Id); logging.Remove(d.Id); break;
            case TdpOp.MoveSlot m when slots.TryGetValue(m.Id, out var s): slots[m.Id] = (m.NewBaseGfn, s.Pages); break;
            case TdpOp.SetDirtyLogging l when l.On: logging.Add(l.Id); break;
            case TdpOp.SetDirtyLogging l: logging.Remove(l.Id); break;
        }
    }

    /// <summary>genSlot: sizes from one page to 1 GiB and more, bases and host frames aligned or not.</summary>
    public TdpOp NewSlot(int id)
    {
        ulong pages = rng.Next(10) switch
        {
            < 3 => (ulong)rng.Next(1, 64),                 // a few 4 KiB pages
            < 7 => (ulong)rng.Next(1, 5) * 512 + (ulong)(rng.Next(3) == 0 ? rng.Next(1, 512) : 0),   // some 2 MiB pages
            < 9 => 512 * 512 + (ulong)(rng.Next(2) * 512),  // 1 GiB (and a bit)
            _ => (ulong)rng.Next(1, 2000),
        };
        bool huge = pages >= 512 * 512;
        ulong baseGfn = FreeBase(pages, alignTo: huge && rng.Next(4) != 0 ? 512UL * 512 : 1UL);
        // Rarely at the top of the gfn space memslots may use (below the shared bit, if any): ending
        // exactly there, or one page past it (rejected).
        if (rng.Next(40) == 0) baseGfn = SlotGfnLimit - pages + (ulong)rng.Next(0, 2);
        // Big slots are mostly backed by 1 GiB host pages, so 1 GiB mappings are common enough; some by
        // 2 MiB pages (hugetlbfs' default), where the host page, not the alignment, caps the leaf at 2 MiB.
        var hostSize = (huge ? rng.Next(1, 6) : rng.Next(3)) switch { 0 => PageSize.Size4K, 1 => PageSize.Size2M, _ => PageSize.Size1G };
        // Host frames usually share the gfn's alignment (huge pages possible), sometimes are off by a little.
        ulong hostBase = (ulong)rng.Next(1, 64) << 18;
        hostBase += baseGfn & 0x3FFFF;
        if (rng.Next(5) == 0) hostBase += (ulong)rng.Next(1, 512);
        if (rng.Next(40) == 0) hostBase = (1UL << 36) - pages + (ulong)rng.Next(0, 2);   // at the stage-2 limit
        else if (hostRanges.Count > 0 && rng.Next(10) == 0)
        {
            // Right next to another slot's host frames (accepted), or sharing its last frame (refused).
            var (otherBase, otherPages) = hostRanges[rng.Next(hostRanges.Count)];
            hostBase = rng.Next(3) switch
            {
                0 => otherBase + otherPages,
                1 => otherBase >= pages ? otherBase - pages : otherBase + otherPages,
                _ => otherBase + otherPages - 1,
            };
        }
        return new TdpOp.CreateSlot(id, baseGfn, pages, hostBase, hostSize, ReadOnly: rng.Next(6) == 0);
    }

    /// <summary>Where memslot gfns end: the shared bit when the VM has one, else the guest-physical width.</summary>
    ulong SlotGfnLimit => config.SharedBit is { } bit ? 1UL << (bit - 12) : config.GfnLimit;

    ulong FreeBase(ulong pages, ulong alignTo = 1)
    {
        for (int attempt = 0; attempt < 20; attempt++)
        {
            ulong region = Regions[rng.Next(Regions.Length)];
            ulong offset = rng.Next(3) switch { 0 => 0, 1 => (ulong)rng.Next(0, 8) * 512, _ => (ulong)rng.Next(0, 4096) };
            ulong b = (region + offset + alignTo - 1) / alignTo * alignTo;
            if (!slots.Values.Any(s => b < s.Base + s.Pages && s.Base < b + pages)) return b;
        }
        return 0x100_0000 + (ulong)rng.Next(0, 1 << 20);   // far away, usually free
    }

    // ---- the guest's own paging ----

    /// <summary>The slot that holds the guest's page tables: 64 writable 4 KiB pages below 4 GiB.</summary>
    public const int GuestRamSlot = 8;
    const ulong GuestRamPages = 64;

    ForestBuilder? forest;
    PagingControls guestControls = new(PagingMode.Long4);
    ulong guestCr3;

    /// <summary>
    /// Creates the guest's RAM slot, builds a page-table forest in it with the walk issue's
    /// builder (leaves mostly pointing into the slots), writes it with guest stores (through the
    /// MMU, as a guest would) and turns paging on.
    /// </summary>
    public void BuildGuest()
    {
        // Below 4 GiB, so that 32-bit and PAE guests can point CR3 at it.
        ulong ramBase = new ulong[] { 0x100, 0x8_0000, 0xC_0000, 0xF_0000 }
            .FirstOrDefault(b => !slots.Values.Any(s => b < s.Base + s.Pages && s.Base < b + GuestRamPages), 0xF_8000UL);
        var guestRam = new Memslot(ramBase, GuestRamPages);
        Add(new TdpOp.CreateSlot(GuestRamSlot, ramBase, GuestRamPages, 0x3000_0000, PageSize.Size4K, ReadOnly: false));
        guestControls = Walk.WalkGen.GenControls(rng, (PagingMode)rng.Next(4));
        var ranges = slots.Values.Select(s => (s.Base, s.Pages)).ToList();
        forest = new ForestBuilder(rng, guestControls, [guestRam], ranges);
        forest.Grow(paths: 2 + rng.Next(6));
        foreach (var w in forest.SetupWrites()) Add(new TdpOp.GuestStore(w.Gpa, w.Value, w.Size));
        guestCr3 = forest.Cr3;
        Add(new TdpOp.GuestSetPaging(guestControls, guestCr3));
    }

    /// <summary>genGuestOp: the walk issue's operations, as a TDP guest makes them.</summary>
    public TdpOp NextGuestOp()
    {
        if (forest is null) return NextOp();
        var op = forest.NextOp(ref guestControls);
        return op switch
        {
            Spec.GuestWalk.Op.GuestAccess a => new TdpOp.GuestAccess(a.Access),
            Spec.GuestWalk.Op.WriteGuest w => new TdpOp.GuestStore(w.Gpa, w.Value, w.Size),
            Spec.GuestWalk.Op.LoadCr3 l => new TdpOp.GuestSetPaging(guestControls, l.Cr3),
            Spec.GuestWalk.Op.SetControls c => rng.Next(20) == 0 ? new TdpOp.GuestSetPaging(null, 0) : new TdpOp.GuestSetPaging(c.Controls, guestCr3),
            _ => NextOp(),
        };
    }

    /// <summary>genOp.</summary>
    public TdpOp NextOp()
    {
        if (pending.Count > 0) return pending.Dequeue();
        if (config.AccessedDirty != AccessedDirty.Untracked && rng.Next(100) < 14) return Aging();
        if (notifiers && slots.Count > 0 && rng.Next(100) < 15) return NotifierScenario();
        if (slots.Count > 0 && rng.Next(100) < 6) return HugePageScenario();
        if (slots.Count > 0 && rng.Next(100) < 5) return PreFault();
        int roll = rng.Next(100);
        if (roll < 52 || slots.Count == 0 && roll < 80) return Access();
        if (roll < 60) return Zap();
        if (roll < 67) return new TdpOp.SetDirtyLogging(SomeSlot(), rng.Next(3) != 0);
        if (roll < 73) return new TdpOp.GetDirtyLog(logging.Count > 0 && rng.Next(5) != 0 ? logging.ElementAt(rng.Next(logging.Count)) : SomeSlot());
        if (roll < 78) return new TdpOp.SetMaxPageSize(rng.Next(3) switch { 0 => PageSize.Size4K, 1 => PageSize.Size2M, _ => PageSize.Size1G });
        if (roll < 83) return NewSlot(rng.Next(6) == 0 ? SomeSlot() : rng.Next(0, 8));
        if (roll < 87) return new TdpOp.DeleteSlot(SlotToDisturb());
        if (roll < 94 && slots.Count > 0)
        {
            int id = SlotToDisturb();
            ulong pages = slots.TryGetValue(id, out var s) ? s.Pages : 1;
            return new TdpOp.MoveSlot(id, FreeBase(pages));
        }
        if (roll < 96) return new TdpOp.ZapAll();
        return Access();
    }

    /// <summary>A slot to delete or move: rarely the guest's page-table RAM, so guest walks keep working.</summary>
    int SlotToDisturb()
    {
        int id = SomeSlot();
        return id == GuestRamSlot && rng.Next(8) != 0 ? SomeSlot() : id;
    }

    int SomeSlot() => slots.Count == 0 || rng.Next(12) == 0 ? rng.Next(0, 8) : slots.Keys.ElementAt(rng.Next(slots.Count));

    /// <summary>
    /// A few operations around one huge page of a slot, for the TLB flush obligations: the first is
    /// returned, the rest queued. One of: dirty logging switched on over a huge mapping, a logged write
    /// that breaks it up, the log fetched, logging off (sometimes on again) and a fault that puts a huge
    /// leaf back over the table of 4 KiB leaves; 4 KiB faults under a small policy, then a larger policy
    /// and a fault that replaces their table; a huge mapping zapped by a range that starts or ends
    /// inside it. Accesses mostly stay in one root (shared or private), sometimes not.
    /// </summary>
    public TdpOp HugePageScenario()
    {
        var big = slots.Where(kv => kv.Value.Pages >= 512).ToList();
        var (id, s) = big.Count > 0 && rng.Next(8) != 0 ? big[rng.Next(big.Count)] : slots.ElementAt(rng.Next(slots.Count));
        ulong huge = s.Pages >= 1UL << 18 && rng.Next(3) == 0 ? 1UL << 18 : 512;
        // A huge-page-aligned chunk inside the slot when there is one, else the slot's start.
        ulong first = (s.Base + huge - 1) & ~(huge - 1);
        ulong chunks = first + huge <= s.Base + s.Pages ? (s.Base + s.Pages - first) / huge : 0;
        ulong chunk = chunks > 0 ? first + (ulong)rng.NextInt64(0, (long)Math.Min(chunks, 4)) * huge : s.Base & ~(huge - 1);
        ulong Inside() => Math.Max(s.Base, Math.Min(s.Base + s.Pages - 1, chunk + (ulong)rng.NextInt64(0, (long)huge)));
        bool shared = rng.Next(2) == 0;
        TdpOp.AccessGpa At(ulong gfn, AccessType type) => AccessAt(gfn, type, rng.Next(5) == 0 ? rng.Next(2) == 0 : shared);
        var hugeSize = huge == 512 ? PageSize.Size2M : PageSize.Size1G;

        switch (rng.Next(4))
        {
            case 3:
                // A huge leaf write-protected by logging that never sees a logged write: read (maps
                // huge), logging on (protects it), sometimes a fetch, logging off, then a write (KVM
                // makes the huge leaf writable in place: nothing to split once the slot stops logging).
                pending.Enqueue(new TdpOp.SetDirtyLogging(id, true));
                if (rng.Next(2) == 0) pending.Enqueue(new TdpOp.GetDirtyLog(id));
                pending.Enqueue(new TdpOp.SetDirtyLogging(id, false));
                pending.Enqueue(At(Inside(), AccessType.Write));
                return At(Inside(), AccessType.Read);
            case 0:
                // Dirty logging over a huge mapping: on (write-protects it), a logged write (zaps it and
                // maps 4 KiB), fetch, off, then a fault that maps huge over the 4 KiB table.
                pending.Enqueue(new TdpOp.SetDirtyLogging(id, true));
                pending.Enqueue(At(Inside(), AccessType.Write));
                bool again = rng.Next(3) == 0;   // on -> on: the bitmap, with the write's bit, is kept
                if (again) pending.Enqueue(new TdpOp.SetDirtyLogging(id, true));
                if (again || rng.Next(2) == 0) pending.Enqueue(new TdpOp.GetDirtyLog(id));
                pending.Enqueue(new TdpOp.SetDirtyLogging(id, false));
                if (rng.Next(3) == 0)
                {
                    pending.Enqueue(new TdpOp.SetDirtyLogging(id, true));        // on -> off -> on
                    pending.Enqueue(At(Inside(), AccessType.Write));
                    pending.Enqueue(new TdpOp.SetDirtyLogging(id, false));
                }
                pending.Enqueue(At(Inside(), rng.Next(2) == 0 ? AccessType.Read : AccessType.Write));
                return At(Inside(), rng.Next(2) == 0 ? AccessType.Read : AccessType.Write);
            case 1:
                // 4 KiB leaves under a small policy, then a policy that allows the huge page: the next
                // fault in the chunk frees the table of 4 KiB leaves.
                for (int i = rng.Next(1, 4); i > 0; i--) pending.Enqueue(At(Inside(), AccessType.Write));
                if (rng.Next(3) == 0) { ulong z = Inside(); pending.Enqueue(new TdpOp.ZapRange(z, z + 1)); }
                pending.Enqueue(new TdpOp.SetMaxPageSize(rng.Next(3) == 0 ? PageSize.Size1G : hugeSize));
                pending.Enqueue(At(Inside(), AccessType.Read));
                return new TdpOp.SetMaxPageSize(huge == 512 ? PageSize.Size4K : rng.Next(2) == 0 ? PageSize.Size4K : PageSize.Size2M);
            default:
                // A huge mapping, then a zap that covers only part of it, then a touch of another part.
                pending.Enqueue(ZapInside(Inside(), huge));
                pending.Enqueue(At(Inside(), AccessType.Read));
                return At(Inside(), rng.Next(2) == 0 ? AccessType.Read : AccessType.Write);
        }
    }

    /// <summary>
    /// genPreFault: KVM_PRE_FAULT_MEMORY over part of a slot: mostly inside it, often running past its
    /// end (partial progress), sometimes starting before it (nothing mapped), a page to a few 2 MiB
    /// pages long (the spec faults once per leaf, so 4 KiB ranges stay short); rarely empty, unaligned,
    /// wrapping or beyond the gpa width.
    /// </summary>
    TdpOp.PreFault PreFault()
    {
        if (rng.Next(15) == 0)
            return rng.Next(3) switch
            {
                0 => new TdpOp.PreFault((ulong)rng.Next(0, 1 << 20) << 12, 0),
                1 => new TdpOp.PreFault(((ulong)rng.Next(0, 1 << 20) << 12) | 0x800, 0x1000),
                _ => new TdpOp.PreFault(0UL - ((ulong)rng.Next(1, 4) << 12), (ulong)rng.Next(4, 8) << 12),
            };
        var s = slots.Values.ElementAt(rng.Next(slots.Count));
        ulong gfn = rng.Next(10) switch
        {
            < 5 => s.Base + (ulong)rng.NextInt64(0, (long)s.Pages),
            < 7 => s.Base + s.Pages - Math.Min(s.Pages, (ulong)rng.Next(1, 8)),          // runs past the end
            < 8 => s.Base >= 4 ? s.Base - (ulong)rng.Next(1, 4) : s.Base + s.Pages,      // starts outside
            _ => Math.Max(s.Base, (s.Base + (ulong)rng.NextInt64(0, (long)s.Pages)) & ~511UL),
        };
        ulong pages = rng.Next(10) switch
        {
            < 6 => (ulong)rng.Next(1, 33),
            < 9 => 512 + (ulong)rng.Next(0, 4),
            _ => (ulong)rng.Next(1, 1100),
        };
        recentGfns.Add(gfn);
        if (recentGfns.Count > 16) recentGfns.RemoveAt(0);
        ulong gpa = gfn << 12;
        if (config.SharedBit is { } bit && rng.Next(2) == 0) gpa |= 1UL << bit;
        if (rng.Next(100) == 0) gpa |= 1UL << 55;          // beyond the gpa width: nothing mapped
        return new TdpOp.PreFault(gpa, pages << 12);
    }

    /// <summary>
    /// genAge (the aging property only): Age or TestAge over a range around a gfn touched before, one page
    /// to a few huge pages long, sometimes a whole slot; rarely empty or beyond the space (rejected).
    /// </summary>
    TdpOp Aging()
    {
        bool test = rng.Next(5) < 2;
        ulong start, end;
        if (rng.Next(40) == 0)
            (start, end) = rng.Next(2) == 0 ? (5UL, 5UL) : (0UL, config.GfnLimit + 1);
        else if (slots.Count > 0 && (recentGfns.Count == 0 || rng.Next(5) == 0))
        {
            var s = slots.Values.ElementAt(rng.Next(slots.Count));
            (start, end) = (s.Base, s.Base + s.Pages);
        }
        else
        {
            ulong gfn = recentGfns.Count > 0 ? recentGfns[rng.Next(recentGfns.Count)] : (ulong)rng.NextInt64(0, 1L << 20);
            start = gfn >= 2 ? gfn - (ulong)rng.Next(0, 3) : gfn;
            end = start + rng.Next(4) switch { 0 => 1UL, 1 => (ulong)rng.Next(1, 16), 2 => 512, _ => (ulong)rng.Next(1, 1 << 19) };
            // Often the guest touches the page again right after: a hit that sets A again, or without
            // hardware A/D the fault that makes an old leaf young (or a new fault after a zap).
            if (!test && rng.Next(2) == 0)
                pending.Enqueue(AccessAt(gfn, rng.Next(3) == 0 ? AccessType.Write : AccessType.Read, rng.Next(2) == 0));
        }
        return test ? new TdpOp.TestAge(start, end) : new TdpOp.Age(start, end);
    }

    /// <summary>A zap range that starts or ends (or both) inside the <paramref name="huge"/>-frame page holding <paramref name="gfn"/>.</summary>
    TdpOp.ZapRange ZapInside(ulong gfn, ulong huge)
    {
        ulong page = gfn & ~(huge - 1);
        ulong inside = page + (ulong)rng.NextInt64(1, (long)huge);
        return rng.Next(4) switch
        {
            0 => new TdpOp.ZapRange(inside, inside + (ulong)rng.Next(1, 17)),                        // within it
            1 => new TdpOp.ZapRange(inside, page + huge + (ulong)rng.Next(0, 513)),                   // from inside past its end
            2 => new TdpOp.ZapRange(page >= 512 ? page - (ulong)rng.Next(1, 513) : 0, inside),        // from before it to inside
            _ => new TdpOp.ZapRange(gfn, gfn + 1),                                                    // one 4 KiB page of it
        };
    }

    /// <summary>genAccess: mostly inside a slot, often a gfn touched before, shared or private.</summary>
    TdpOp.AccessGpa Access()
    {
        ulong gfn;
        int roll = rng.Next(100);
        if (roll < 40 && recentGfns.Count > 0)
            gfn = recentGfns[rng.Next(recentGfns.Count)] + (ulong)(rng.Next(3) == 0 ? rng.Next(-2, 3) : 0);
        else if (roll < 95 && slots.Count > 0)
        {
            var s = slots.Values.ElementAt(rng.Next(slots.Count));
            gfn = s.Base + (ulong)rng.NextInt64(0, (long)s.Pages);
            if (rng.Next(10) == 0) gfn = s.Base + s.Pages - 1 - (ulong)rng.Next(0, 2);   // slot edges
        }
        else
            gfn = (ulong)rng.NextInt64(0, 1L << 24);
        var type = rng.Next(10) switch { < 5 => AccessType.Read, < 9 => AccessType.Write, _ => AccessType.Fetch };
        bool shared = rng.Next(2) == 0;
        var access = AccessAt(gfn, type, shared);
        return rng.Next(200) == 0 ? access with { Gpa = access.Gpa | 1UL << 55 } : access;    // beyond the gpa width: rejected
    }

    /// <summary>An access to <paramref name="gfn"/> at a random offset, through the shared gpa when asked (and the VM has a shared bit).</summary>
    TdpOp.AccessGpa AccessAt(ulong gfn, AccessType type, bool shared)
    {
        recentGfns.Add(gfn);
        if (recentGfns.Count > 16) recentGfns.RemoveAt(0);
        ulong gpa = (gfn << 12) | (uint)rng.Next(0, 4096);
        if (config.SharedBit is { } bit && shared) gpa |= 1UL << bit;
        return new TdpOp.AccessGpa(gpa, type);
    }

    /// <summary>genZap: usually a range overlapping something touched before, sometimes huge-page sized.</summary>
    TdpOp Zap()
    {
        // Rarely a range at the edges of what the MMU accepts: empty, reversed, ending past the gpa
        // space (all refused), or ending exactly at its top (accepted).
        if (rng.Next(50) == 0)
        {
            ulong s = (ulong)rng.NextInt64(0, 1L << 20);
            return rng.Next(4) switch
            {
                0 => new TdpOp.ZapRange(s, s),
                1 => new TdpOp.ZapRange(s + 1, s),
                2 => new TdpOp.ZapRange(s, config.GfnLimit + (ulong)rng.Next(1, 512)),
                _ => new TdpOp.ZapRange(s, config.GfnLimit),
            };
        }
        if (recentGfns.Count > 0 && rng.Next(4) == 0)
            return ZapInside(recentGfns[rng.Next(recentGfns.Count)], rng.Next(3) == 0 ? 1UL << 18 : 512);
        ulong start = recentGfns.Count > 0 && rng.Next(4) != 0
            ? recentGfns[rng.Next(recentGfns.Count)] - (ulong)rng.Next(0, 3)
            : (ulong)rng.NextInt64(0, 1L << 20);
        ulong length = rng.Next(4) switch { 0 => 1, 1 => (ulong)rng.Next(1, 16), 2 => 512, _ => (ulong)rng.Next(1, 1 << 19) };
        if (start > 1UL << 60) start = 0;     // the subtraction wrapped
        return new TdpOp.ZapRange(start, start + length);
    }
}
