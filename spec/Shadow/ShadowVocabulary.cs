using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;

namespace MmuSpec.Spec.Shadow;

/// <summary>
/// A shadow VM's fixed configuration (docs/shadow-model.md): the guest's MAXPHYADDR, which every
/// guest paging state uses, whether leaf shadow pages may go unsync (KVM always allows it; the
/// switch lets the tests run the write-protect-only path too), the cached-root policy, and whether
/// a fill prefetches its neighbours (KVM always does; off by default so the model's plain fill stays
/// the reference).
/// </summary>
public sealed record ShadowConfig
{
    public ShadowConfig(int maxPhyAddr, bool allowUnsync = true, ShadowRootPolicy rootPolicy = ShadowRootPolicy.KeepAndResync, bool prefetch = false)
    {
        if (maxPhyAddr is < PagingControls.MinMaxPhyAddr or > PagingControls.MaxMaxPhyAddr)
            throw new ArgumentOutOfRangeException(nameof(maxPhyAddr), maxPhyAddr, $"MAXPHYADDR must be between {PagingControls.MinMaxPhyAddr} and {PagingControls.MaxMaxPhyAddr}");
        if (!Enum.IsDefined(rootPolicy))
            throw new ArgumentOutOfRangeException(nameof(rootPolicy), rootPolicy, "unknown cached-root policy");
        MaxPhyAddr = maxPhyAddr; AllowUnsync = allowUnsync; RootPolicy = rootPolicy; Prefetch = prefetch;
    }

    public int MaxPhyAddr { get; }
    public bool AllowUnsync { get; }
    /// <summary>What a flush does to a previous root it may have made stale (docs/shadow-model.md, "Flush PCID p").</summary>
    public ShadowRootPolicy RootPolicy { get; }
    /// <summary>A fill also maps the neighbours of its leaf (docs/shadow-model.md, "Prefetch"; KVM's pte_prefetch).</summary>
    public bool Prefetch { get; }

    /// <summary>Frames of the guest-physical space: memslots lie below this gfn.</summary>
    public ulong GfnLimit => 1UL << (MaxPhyAddr - 12);

    /// <summary>Host frames a shadow entry can hold (address bits 51:12).</summary>
    public static ulong HostPfnLimit => 1UL << 40;

    public ShadowConfig WithMaxPhyAddr(int value) => new(value, AllowUnsync, RootPolicy, Prefetch);
    public ShadowConfig WithAllowUnsync(bool value) => new(MaxPhyAddr, value, RootPolicy, Prefetch);
    public ShadowConfig WithRootPolicy(ShadowRootPolicy value) => new(MaxPhyAddr, AllowUnsync, value, Prefetch);
    public ShadowConfig WithPrefetch(bool value) => new(MaxPhyAddr, AllowUnsync, RootPolicy, value);

    public override string ToString() =>
        $"MAXPHYADDR {MaxPhyAddr}{(AllowUnsync ? "" : ", no unsync")}{(RootPolicy == ShadowRootPolicy.Upstream ? ", upstream root policy" : "")}"
        + (Prefetch ? ", prefetch" : "");
}

/// <summary>KVM's ACC_* rights bits: what a guest path allows (execute, write, user).</summary>
[Flags]
public enum Acc
{
    None = 0,
    Exec = 1,
    Write = 2,
    User = 4,
    All = Exec | Write | User,
}

public static class AccExtensions
{
    /// <summary>The ACC bits of a walk's rights: X unless XD applied, W if writable, U if user.</summary>
    public static Acc ToAcc(this TranslationRights rights) =>
        (rights.NoExecute ? Acc.None : Acc.Exec) | (rights.Writable ? Acc.Write : Acc.None) | (rights.User ? Acc.User : Acc.None);

    /// <summary>The rights a path with these ACC bits gives before the next entry is folded in (no protection key).</summary>
    public static TranslationRights ToRights(this Acc acc) =>
        new(User: acc.HasFlag(Acc.User), Writable: acc.HasFlag(Acc.Write), NoExecute: !acc.HasFlag(Acc.Exec), ProtectionKey: 0);

    public static string Describe(this Acc acc) =>
        $"{(acc.HasFlag(Acc.User) ? "U" : "-")}{(acc.HasFlag(Acc.Write) ? "W" : "-")}{(acc.HasFlag(Acc.Exec) ? "X" : "-")}";
}

/// <summary>
/// A shadow page's role: KVM's <c>kvm_mmu_page_role</c>, field for field (docs/shadow-model.md,
/// "Roles and keys"). A page is reused only when its gfn and its whole role match.
/// </summary>
/// <param name="Level">1..5: a level-L page translates gva bits [12+9(L-1), 12+9L).</param>
/// <param name="Has4ByteGpte">The guest uses 32-bit paging (1024 four-byte entries per table).</param>
/// <param name="Quadrant">Which part of a 32-bit guest table the page shadows (0..3 at level 2, 0..1 at level 1).</param>
/// <param name="Direct">The page maps a linear gfn range (it splits a guest large page).</param>
/// <param name="Access">The rights of the guest path above the page (for a direct page: the large guest
/// page's rights, without W while it is clean).</param>
/// <param name="Invalid">Always false in the model (a zapped root is dropped at once).</param>
public sealed record ShadowRole(
    int Level, bool Has4ByteGpte, int Quadrant, bool Direct, Acc Access, bool Invalid,
    bool EferNx, bool Cr0Wp, bool SmepAndNotWp, bool SmapAndNotWp,
    bool AdDisabled, bool GuestMode, bool Passthrough, bool Smm) : IComparable<ShadowRole>
{
    /// <summary>
    /// The role of a paging state's root pages (level still to be set): 4-byte entries in 32-bit
    /// paging, all rights, and the control bits whose meaning the shadow entries depend on.
    /// </summary>
    public static ShadowRole Base(PagingControls c) => new(
        Level: 1, Has4ByteGpte: c.Mode == PagingMode.Bits32, Quadrant: 0, Direct: false, Access: Acc.All, Invalid: false,
        EferNx: c.EferNxe, Cr0Wp: c.Cr0Wp, SmepAndNotWp: c.Cr4Smep && !c.Cr0Wp, SmapAndNotWp: c.Cr4Smap && !c.Cr0Wp,
        AdDisabled: false, GuestMode: false, Passthrough: false, Smm: false);

    public ShadowRole WithLevel(int value) => this with { Level = value };
    public ShadowRole WithQuadrant(int value) => this with { Quadrant = value };
    public ShadowRole WithDirect(bool value) => this with { Direct = value };
    public ShadowRole WithAccess(Acc value) => this with { Access = value };

    /// <summary>Highest level first, then field by field in declaration order (false before true).</summary>
    public int CompareTo(ShadowRole? other) =>
        other is null ? 1 : SortKey().CompareTo(other.SortKey());

    /// <summary>Every field packed into one number, so that roles compare without allocating.</summary>
    long SortKey()
    {
        long key = 9 - Level;
        foreach (bool bit in (ReadOnlySpan<bool>)[Direct, Has4ByteGpte])
            key = key << 1 | (bit ? 1L : 0);
        key = key << 2 | (long)Quadrant;
        key = key << 3 | (long)Access;
        foreach (bool bit in (ReadOnlySpan<bool>)[Invalid, EferNx, Cr0Wp, SmepAndNotWp, SmapAndNotWp, AdDisabled, GuestMode, Passthrough, Smm])
            key = key << 1 | (bit ? 1L : 0);
        return key;
    }

    public override string ToString() =>
        $"L{Level}{(Direct ? " direct" : "")}{(Has4ByteGpte ? " 4B" : "")}{(Quadrant != 0 ? $" q{Quadrant}" : "")} acc={Access.Describe()}"
        + (EferNx ? " nx" : "") + (Cr0Wp ? " wp" : "") + (SmepAndNotWp ? " smep!wp" : "") + (SmapAndNotWp ? " smap!wp" : "")
        + (Invalid ? " invalid" : "") + (AdDisabled ? " ad-off" : "") + (GuestMode ? " guest-mode" : "")
        + (Passthrough ? " passthrough" : "") + (Smm ? " smm" : "");
}

/// <summary>A shadow page's identity: the gfn it shadows (indirect) or first maps (direct), and its role.</summary>
public sealed record ShadowKey(ulong Gfn, ShadowRole Role) : IComparable<ShadowKey>
{
    public int CompareTo(ShadowKey? other)
    {
        if (other is null) return 1;
        int c = Role.Level != other.Role.Level ? other.Role.Level.CompareTo(Role.Level) : Gfn.CompareTo(other.Gfn);   // highest level first
        return c != 0 ? c : Role.CompareTo(other.Role);
    }

    public override string ToString() => $"({Bits.Hex(Gfn)}, {Role})";
}

/// <summary>A present entry of a shadow page: a link to a child page, or (at level 1) a 4 KiB leaf.</summary>
public abstract record ShadowEntry
{
    private ShadowEntry() { }

    public sealed record Table(ShadowKey Child) : ShadowEntry
    {
        public override string ToString() => $"table {Child}";
    }

    /// <summary>
    /// A 4 KiB leaf: guest frame <paramref name="Gfn"/> (stored, never computed) in host frame
    /// <paramref name="HostPfn"/>, with the guest's combined <paramref name="Rights"/>;
    /// <paramref name="Writable"/> is the MMU's own W bit (false while it wants writes to fault).
    /// </summary>
    public sealed record Leaf(ulong Gfn, ulong HostPfn, TranslationRights Rights, bool Writable) : ShadowEntry
    {
        public Leaf WithRights(TranslationRights value) => this with { Rights = value };
        public Leaf WithWritable(bool value) => this with { Writable = value };
        public override string ToString() =>
            $"leaf gfn {Bits.Hex(Gfn)} -> pfn {Bits.Hex(HostPfn)} {Rights}{(Writable ? "" : " write-protected")}";
    }
}

/// <summary>A shadow page: its key, its present entries by index, whether it is unsync, and its write-flooding count.</summary>
public sealed record ShadowPage(ShadowKey Key, ImmutableSortedDictionary<int, ShadowEntry> Entries, bool Unsync, int WriteFlooding)
{
    public static ShadowPage Empty(ShadowKey key) => new(key, ImmutableSortedDictionary<int, ShadowEntry>.Empty, false, 0);

    public ShadowPage With(int index, ShadowEntry entry) => this with { Entries = Entries.SetItem(index, entry) };
    public ShadowPage Without(int index) => this with { Entries = Entries.Remove(index) };
    public ShadowPage WithUnsync(bool value) => this with { Unsync = value };
    public ShadowPage WithWriteFlooding(int value) => this with { WriteFlooding = value };

    public bool Equals(ShadowPage? other) =>
        other is not null && Key.Equals(other.Key) && Unsync == other.Unsync && WriteFlooding == other.WriteFlooding
        && Entries.SameEntries(other.Entries);

    public override int GetHashCode() => HashCode.Combine(Key, Entries.Count, Unsync);

    public override string ToString() =>
        $"page {Key}{(Unsync ? " unsync" : "")}{(WriteFlooding != 0 ? $" flooding={WriteFlooding}" : "")}: "
        + (Entries.Count == 0 ? "empty" : string.Join("; ", Entries.Select(e => $"[{e.Key}] {e.Value}")));
}
