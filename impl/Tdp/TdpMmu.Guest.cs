using System.Diagnostics;
using MmuSpec.Impl.Memory;
using MmuSpec.Impl.Paging;
using static MmuSpec.Impl.PageTable.TableGeometry;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// The guest's memory and its own paging: docs/tdp-model.md, "Guest memory and the guest's own paging".
/// Every guest-physical address the guest or its page walk touches goes through <see cref="Access"/>.
/// </summary>
public sealed partial class TdpMmu<TFormat>
{
    public PagingControls? GuestControls => _guest?.Controls;

    public ulong GuestCr3 => _guest?.Cr3 ?? 0;

    /// <summary>PAE PDPTE register <paramref name="i"/> (0..3) while the guest is in PAE paging, else 0.</summary>
    public ulong GuestPdpte(int i)
    {
        if ((uint)i >= PdpteRegisters.Count)
            ThrowHelper.ArgumentOutOfRange(nameof(i), "PDPTE register index must be 0..3.");
        GuestVcpu? guest = _guest;
        return guest is not null && guest.Controls.Mode == PagingMode.Pae ? guest.Pdpte(i) : 0;
    }

    /// <summary>
    /// A guest store of <paramref name="size"/> (4 or 8) bytes: the write access <c>Access(gpa, Write)</c>,
    /// and when it maps, the low <paramref name="size"/> bytes of <paramref name="value"/> land at the hpa.
    /// </summary>
    public TdpAccessOutcome GuestStore(ulong gpa, ulong value, int size)
    {
        ThrowIfDisposed();
        if (size is not (sizeof(uint) or sizeof(ulong)))
            return RejectGuestAccess($"store size {size} is not 4 or 8");
        if ((gpa & (ulong)(size - 1)) != 0)
            return RejectGuestAccess($"gpa 0x{gpa:X} is not aligned to the {size}-byte store");
        TdpAccessOutcome outcome = Access(gpa, AccessType.Write); // rejects a gpa beyond the width
        if (outcome.Status == TdpAccessStatus.Mapped)
            StoreGuest(gpa, value, size);
        return outcome;
    }

    /// <summary>
    /// Paging off (<paramref name="controls"/> null): forgets the paging state. On: MOV CR3 under the
    /// controls, PAE loading and checking the PDPTEs from guest memory (read through the slots, no MMU
    /// access); #GP leaves the state as it was.
    /// </summary>
    public TdpGuestOutcome GuestSetPaging(PagingControls? controls, ulong cr3)
    {
        ThrowIfDisposed();
        if (controls is not PagingControls c)
        {
            _guest = null;
            return TdpGuestOutcome.Ok;
        }
        if ((uint)c.Mode > (uint)PagingMode.Long5)
            return RejectGuest($"unknown paging mode {c.Mode}");
        if (c.MaxPhyAddr is < WalkContext.MinMaxPhyAddr or > WalkContext.MaxMaxPhyAddr)
            return RejectGuest($"MAXPHYADDR {c.MaxPhyAddr} is outside {WalkContext.MinMaxPhyAddr}..{WalkContext.MaxMaxPhyAddr}");

        GuestVcpu? loaded = GuestVcpu.TryCreate(_guestMemory, c, cr3, out Cr3Loader.Result result);
        switch (result)
        {
            case Cr3Loader.Result.OutOfRange:
                return RejectGuest($"CR3 0x{cr3:X} does not fit in 32 bits in {c.Mode} paging");
            case Cr3Loader.Result.GeneralProtection:
                return TdpGuestOutcome.GuestFault(WalkOutcome.GeneralProtection);
        }
        _guest = loaded;
        return TdpGuestOutcome.Ok;
    }

    /// <summary>
    /// A guest access to linear address <paramref name="gva"/>. Paging off: <c>Access(gva, type)</c>. On:
    /// the guest walk over guest memory as it is now (writing nothing), then, in this order, a read access
    /// for every entry it read, the fault if it faulted, a write access per A/D update (storing the
    /// updated entry when it maps), and the access itself.
    /// </summary>
    public TdpGuestOutcome GuestAccess(ulong gva, AccessType type, Privilege priv)
    {
        ThrowIfDisposed();
        if ((uint)type > (uint)AccessType.Fetch)
            return RejectGuest($"unknown access type {type}");
        if ((uint)priv > (uint)Privilege.ImplicitSupervisor)
            return RejectGuest($"unknown privilege {priv}");
        if (type == AccessType.Fetch && priv == Privilege.ImplicitSupervisor)
            return RejectGuest("an implicit supervisor access is never an instruction fetch");

        GuestVcpu? guest = _guest;
        if (guest is null)
            return TdpGuestOutcome.FromAccess(Access(gva, type), gva); // the gva is the gpa; beyond the width: rejected

        if (guest.Controls.Mode is not (PagingMode.Long4 or PagingMode.Long5) && gva > uint.MaxValue)
            return RejectGuest($"gva 0x{gva:X} is wider than 32 bits in {guest.Controls.Mode} paging");

        WalkTrace trace = default;
        WalkOutcome walk = guest.Translate(gva, type, priv, ref trace);

        // Table reads: every entry read from memory, in walk order, the one that ended a faulting walk
        // included. Each is inside a slot (it was read), so none is rejected; results are not reported.
        for (int i = 0; i < trace.Count; i++)
            Access(trace[i], AccessType.Read);

        if (walk.Status != WalkStatus.Translated)
            return TdpGuestOutcome.GuestFault(walk);

        // A/D updates (SDM 4.8, KVM walk_addr_generic): A on every entry used, top down, then D on the
        // leaf of a write. Each re-reads the entry, so an entry used twice gets A once.
        int bytes = trace.EntryBytes;
        for (int i = 0; i < trace.Used; i++)
            UpdateGuestEntry(trace[i], bytes, PagingEntryBits.Accessed);
        if (type == AccessType.Write)
            UpdateGuestEntry(trace.LeafGpa, bytes, PagingEntryBits.Dirty);

        ulong gpa = walk.Gpa;
        return TdpGuestOutcome.FromAccess(Access(gpa, type), gpa);
    }

    /// <summary>Every non-zero 8-byte word of every slot's host memory (slots by id, words ascending).</summary>
    public void VisitHostMemory(Action<ulong, ulong> visit)
    {
        ArgumentNullException.ThrowIfNull(visit);
        ThrowIfDisposed();
        _slots.VisitHostMemory(visit);
    }

    /// <summary>
    /// One A/D update: when <paramref name="bit"/> is clear in the entry as it is now, a write access to
    /// it; if that maps, the updated entry is stored at the hpa, else (a read-only slot) the update is
    /// dropped, as KVM skips A/D updates of entries in read-only memslots.
    /// </summary>
    private void UpdateGuestEntry(ulong entryGpa, int bytes, ulong bit)
    {
        bool backed = _guestMemory.TryRead(entryGpa, bytes, out ulong current);
        Debug.Assert(backed, "the walk read this entry, so a slot backs it");
        if ((current & bit) != 0)
            return;
        TdpAccessOutcome write = Access(entryGpa, AccessType.Write);
        if (write.Status == TdpAccessStatus.Mapped)
            StoreGuest(entryGpa, current | bit, bytes);
    }

    /// <summary>
    /// Stores <paramref name="size"/> bytes at <paramref name="gpa"/>, which an access just mapped, in its slot's
    /// host memory. By the gpa, not the hpa: a page the host moved (TdpMmu.Notifier.cs) keeps its contents
    /// at its home frame, where host memory is kept, while the leaf names the frame it moved to.
    /// </summary>
    private void StoreGuest(ulong gpa, ulong value, int size)
    {
        ulong gfn = (gpa >> PageShift) & ~_sharedGfnMask;
        HostMemslot? slot = _slots.Find(gfn);
        Debug.Assert(slot is not null, $"gpa 0x{gpa:X} is in no slot, yet an access mapped it");
        slot.Host.Store(((gfn - slot.BaseGfn) << PageShift) | (gpa & PageOffsetMask), value, size);
    }

    private TdpAccessOutcome RejectGuestAccess(string reason)
    {
        LastRejection = reason;
        return TdpAccessOutcome.Rejected;
    }

    private TdpGuestOutcome RejectGuest(string reason)
    {
        LastRejection = reason;
        return TdpGuestOutcome.Rejected;
    }
}
