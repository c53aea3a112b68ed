using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;
using static MmuSpec.Impl.Paging.PageFaultErrorCode;

namespace MmuSpec.Impl.Paging;

/// <summary>The guest page walk (KVM paging_tmpl.h walk_addr_generic + permission_fault).</summary>
public sealed partial class GuestVcpu
{
    // Error-code bit per AccessType packed into one constant, one byte lane per type (Read=0, Write=W,
    // Fetch=I/D): a shift and mask instead of a table load or branches.
    private const int AccessLaneBits = 8;
    private const uint AccessLaneMask = (1u << AccessLaneBits) - 1;
    private const uint AccessTypeErrorBits =
        (Write << (AccessLaneBits * (int)AccessType.Write)) |
        (InstructionFetch << (AccessLaneBits * (int)AccessType.Fetch));

    /// <summary>
    /// Translates <paramref name="gva"/> for one access, checks rights (SDM 4.6) and, when permitted,
    /// sets the accessed/dirty bits (SDM 4.8). Allocation-free.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Undefined enum value, or gva &gt;= 2^32 in 32-bit/PAE paging.</exception>
    /// <exception cref="ArgumentException">A fetch with <see cref="Privilege.ImplicitSupervisor"/>.</exception>
    [SkipLocalsInit]
    public WalkOutcome Access(ulong gva, AccessType type, Privilege priv)
    {
        NoObserver none = default;
        return Walk(gva, type, priv, ref none);
    }

    /// <summary>
    /// The same walk and checks as <see cref="Access"/>, but it writes nothing: no accessed/dirty bit is
    /// set. Instead <paramref name="trace"/> receives the guest-physical address of every entry read from
    /// memory, in walk order (including the entry that ended a faulting walk), the entry width, and how
    /// many entries a translation used; the caller performs the A/D updates (A on each used entry top
    /// down, then D on the leaf for a write) as it sees fit. Allocation-free.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Undefined enum value, or gva &gt;= 2^32 in 32-bit/PAE paging.</exception>
    /// <exception cref="ArgumentException">A fetch with <see cref="Privilege.ImplicitSupervisor"/>.</exception>
    [SkipLocalsInit]
    public WalkOutcome Translate(ulong gva, AccessType type, Privilege priv, ref WalkTrace trace)
    {
        trace.Start(_context.WideEntries ? sizeof(ulong) : sizeof(uint));
        WalkOutcome outcome = Walk(gva, type, priv, ref trace);
        trace.Finish(outcome.Status == WalkStatus.Translated);
        return outcome;
    }

    /// <summary>
    /// <see cref="Access"/>, the same walk that sets the accessed/dirty bits itself, also reporting into
    /// <paramref name="trace"/> every entry it read, in walk order, with the value it read (before this
    /// walk's A/D updates), and the entry it could not read when a table lies outside every memslot. For
    /// callers that report what a walk changed (the CLI's batch walks) without a second walk. Allocation-free.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Undefined enum value, or gva &gt;= 2^32 in 32-bit/PAE paging.</exception>
    /// <exception cref="ArgumentException">A fetch with <see cref="Privilege.ImplicitSupervisor"/>.</exception>
    [SkipLocalsInit]
    public WalkOutcome Access(ulong gva, AccessType type, Privilege priv, ref AccessTrace trace)
    {
        trace.Start(_context.WideEntries ? sizeof(ulong) : sizeof(uint));
        WalkOutcome outcome = Walk(gva, type, priv, ref trace);
        trace.Finish(outcome.Status == WalkStatus.Translated);
        return outcome;
    }

    /// <summary>
    /// The walk itself, compiled once per observer. Inlined into its two callers so the untraced
    /// <see cref="Access"/> is the same code as before the observer existed: with <see cref="NoObserver"/>
    /// the entry reports vanish and the A/D pass is a constant-true branch.
    /// </summary>
    [SkipLocalsInit] // WalkedEntries slots are written before they are read: skip zeroing the frame
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private WalkOutcome Walk<TObserver>(ulong gva, AccessType type, Privilege priv, ref TObserver observer)
        where TObserver : struct, IWalkObserver
    {
        WalkContext ctx = _context;
        if ((uint)type > (uint)AccessType.Fetch || (uint)priv > (uint)Privilege.ImplicitSupervisor ||
            (type == AccessType.Fetch && priv == Privilege.ImplicitSupervisor))
            ThrowInvalidAccess(type, priv);

        int canonicalShift = ctx.CanonicalShift;
        if (canonicalShift == 0)
        {
            if (gva > uint.MaxValue)
                ThrowHelper.ArgumentOutOfRange(nameof(gva), "Linear addresses are 32 bits in 32-bit and PAE paging.");
        }
        else if ((ulong)((long)(gva << canonicalShift) >> canonicalShift) != gva)
        {
            // Sign-extending from the top implemented bit must reproduce the address (SDM 3.3.7.1).
            return WalkOutcome.GeneralProtection;
        }

        uint pfec = AccessErrorCode(type, priv);
        uint reported = pfec & ctx.ReportedAccessBits;

        ulong table;
        if (ctx.UsesPdpteRegisters)
        {
            // PAE: the top level comes from the PDPTE registers; it adds no rights and gets no A bit.
            ulong pdpte = _pdptes[(int)(gva >> PdpteRegisters.IndexShift) & PdpteRegisters.IndexMask];
            if ((pdpte & PagingEntryBits.Present) == 0)
                return WalkOutcome.PageFault(reported);
            table = pdpte & ctx.TableAddressMask;
        }
        else
        {
            table = _rootTable;
        }

        GuestPhysicalMemory memory = _memory; // local copy: saves a field reload per level
        bool wide = ctx.WideEntries;
        int level = ctx.RootLevel;
        int walked = 0;
        uint rights = AccessRights.All;
        // AND of every entry used: its A bit says whether all of them are already accessed, so a
        // warm walk skips the write-back pass and its re-reads (KVM walk_addr_generic's accessed_dirty).
        ulong accessedAll = ~0UL;
        Unsafe.SkipInit(out WalkedEntries entries); // only slots [0, walked) are ever read: saves zeroing 40 bytes
        // Assigned by the loop's first pass; the initial values only keep the compiler's definite
        // assignment independent of the loop condition (a mutation tool turns `true` into `false`).
        PagingEntry entry = default;
        ulong pte = 0;
        while (true)
        {
            ulong index = (gva >> ctx.Levels[level].Shift) & ctx.IndexMask;
            ulong entryGpa = table + (index << ctx.EntryShift);
            entry = memory.Entry(entryGpa);
            if (entry.IsUnbacked)
            {
                observer.EntryUnbacked(entryGpa);
                return WalkOutcome.PageFault(reported); // unbacked table: like a not-present entry (KVM)
            }
            pte = entry.Read(wide);
            observer.EntryRead(entryGpa, pte);
            if ((pte & PagingEntryBits.Present) == 0)
                return WalkOutcome.PageFault(reported);
            int pageSizeBit = (int)(pte >> PagingEntryBits.PageSizeShift) & 1;
            if ((pte & ctx.Reserved.Mask(pageSizeBit, level)) != 0)
                return WalkOutcome.PageFault(reported | Present | ReservedBit);

            entries[walked++] = entry;
            accessedAll &= pte;
            // P sits where ACC exec does and is known to be 1: XOR with XD yields "executable",
            // so U, W and X accumulate with one AND (KVM gpte_access). 4-byte entries have no XD.
            rights &= AccessRights.OfEntry(pte);
            observer.EntryUsed(level, pte, rights);

            if (ctx.IsLeaf(level, pageSizeBit))
                break;
            table = pte & ctx.TableAddressMask;
            level--;
        }

        // Rights and protection keys (SDM 4.6): the same check a shadow MMU's hit path makes.
        uint key = (uint)(pte >> PagingEntryBits.ProtectionKeyShift) & ctx.ProtectionKeyMask;
        uint faultCode = ctx.PermissionFault(pfec, priv, rights, key);
        if (faultCode != 0)
            return WalkOutcome.PageFault(faultCode | reported);

        // Accessed/dirty (SDM 4.8): only now that the access is permitted, re-reading each entry
        // (an entry used at two levels must end with the union of both updates). A tracing observer
        // leaves them to its caller.
        if (TObserver.WritesAccessedDirty)
        {
            if ((accessedAll & PagingEntryBits.Accessed) == 0)
            {
                for (int i = 0; i < walked; i++)
                {
                    memory.NoteEntryWrite(entries[i]);
                    entries[i].SetBits(wide, PagingEntryBits.Accessed);
                }
            }
            if (type == AccessType.Write && (pte & PagingEntryBits.Dirty) == 0)
            {
                memory.NoteEntryWrite(entry);
                entry.SetBits(wide, PagingEntryBits.Dirty);
            }
        }

        ref readonly LevelShape leaf = ref ctx.Levels[level];
        ulong pageBase = (pte & leaf.LeafAddressMask) |
                         (((pte >> PagingEntryBits.Pse36LowBit) & leaf.Pse36Mask) << PagingEntryBits.Pse36TargetBit);
        ulong offsetMask = (1UL << leaf.Shift) - 1;
        return WalkOutcome.Translated(pageBase | (gva & offsetMask), leaf.Shift, rights, key);
    }

    /// <summary>
    /// The walk with a caller's observer (e.g. the shadow MMU's, which records each level's entry and
    /// rights so far for its fill). A/D bits are written only when the observer says so. Allocation-free.
    /// </summary>
    [SkipLocalsInit]
    internal WalkOutcome Observe<TObserver>(ulong gva, AccessType type, Privilege priv, ref TObserver observer)
        where TObserver : struct, IWalkObserver => Walk(gva, type, priv, ref observer);

    /// <summary>Error-code bits (W, U, I/D) of an access: the index of the permission table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint AccessErrorCode(AccessType type, Privilege priv) =>
        ((AccessTypeErrorBits >> (AccessLaneBits * (int)type)) & AccessLaneMask) | (priv == Privilege.User ? User : 0);

    /// <summary><see cref="Access"/>'s observer: reports go nowhere, the walk sets A/D itself.</summary>
    private struct NoObserver : IWalkObserver
    {
        public static bool WritesAccessedDirty => true;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void EntryRead(ulong gpa, ulong pte) { }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void EntryUnbacked(ulong gpa) { }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly void EntryUsed(int level, ulong pte, uint rightsSoFar) { }
    }

    [DoesNotReturn, MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowInvalidAccess(AccessType type, Privilege priv)
    {
        if ((uint)type > (uint)AccessType.Fetch)
            ThrowHelper.ArgumentOutOfRange(nameof(type), "Unknown access type.");
        if ((uint)priv > (uint)Privilege.ImplicitSupervisor)
            ThrowHelper.ArgumentOutOfRange(nameof(priv), "Unknown privilege.");
        ThrowHelper.Argument(nameof(priv), "Implicit supervisor accesses are never instruction fetches.");
    }
}
