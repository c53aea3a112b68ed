using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

// GuestAccess: a hit, or the guest's walk and the fill (docs/shadow-model.md, "GuestAccess").
public sealed partial record ShadowState
{
    ShadowStepped GuestAccess(Access access)
    {
        if (GuestCpu is null) return Reject("paging is off: the shadow MMU serves a guest with paging on");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && access.Gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        var state = Running();

        // 1. A hit: the hardware walked the shadow tables.
        if (state.Hit(access) is { } hit) return new ShadowStepped(state, hit);

        // 2. The guest's walk, with its A/D updates written back.
        var walk = PageWalk.Walk(state.GuestCpu!, state.GuestMemoryView(), access);
        state = state.WriteBackAccessedDirty(walk.Updates, mode.EntryBytes());
        if (walk.Result is not WalkResult.Translated t)
        {
            // SDM §4.10.4.1: a page fault invalidates the TLB entries for the faulting address.
            // Model: in every root of the current PCID (KVM: the current root only).
            if (walk.Result is WalkResult.PageFault)
            {
                int pcid = state.CurrentPcid;
                state = state.InvalidateAddress(access.Gva, state.Roots.All.Where(r => r.Pcid(GuestPcide) == pcid));
            }
            return new ShadowStepped(state, new ShadowResult.GuestFault(walk.Result));
        }

        // 3. No memslot, or a write to a read-only one.
        bool write = access.Type == AccessType.Write;
        if (SlotMemory.SlotOf(Slots, t.Gpa >> 12) is not { } slot || (write && slot.ReadOnly))
            return new ShadowStepped(state, new ShadowResult.MmioExit(t.Gpa));

        // 4. The fill.
        return state.Fill(access, walk, t, slot);
    }

    ShadowResult.Translated? Hit(Access access)
    {
        var c = GuestCpu!.Controls;
        if (c.Mode.IsLongMode() && !PageWalk.IsCanonical(c.Mode, access.Gva)) return null;
        var page = RootPageFor(access.Gva);
        for (int level = RootLevel; level > 1 && page is not null; level--)
            page = Pages[page].Entries.GetValueOrDefault(ShadowIndex(level, access.Gva)) is ShadowEntry.Table t ? t.Child : null;
        if (page is null || Pages[page].Entries.GetValueOrDefault(ShadowIndex(1, access.Gva)) is not ShadowEntry.Leaf leaf) return null;
        if (!AccessRights.Check(c, access, leaf.Rights).Allowed) return null;
        if (access.Type == AccessType.Write && !leaf.Writable) return null;
        ulong offset = access.Gva & 0xFFF;
        return new ShadowResult.Translated((leaf.Gfn << 12) | offset, (leaf.HostPfn << 12) | offset, Faulted: false);
    }

    /// <summary>The walk's A/D updates land in guest memory; dropped in a read-only slot; a logging slot marks the table dirty.</summary>
    ShadowState WriteBackAccessedDirty(IEnumerable<EntryUpdate> updates, int entryBytes)
    {
        var state = this;
        foreach (var u in updates)
            if (SlotMemory.SlotOf(Slots, u.Gpa >> 12) is { ReadOnly: false } slot)
                state = state.StoreGuest(slot, u.Gpa, u.After, entryBytes).MarkDirty(slot, u.Gpa >> 12);
        return state;
    }

    ShadowStepped Fill(Access access, WalkExplanation walk, WalkResult.Translated t, HostMemslot slot)
    {
        var c = GuestCpu!.Controls;
        ulong gva = access.Gva;
        int guestLeafLevel = walk.Steps[^1].Level;
        var state = this;
        var page = state.RootPageFor(gva)!;
        // The guest leaf as the walk left it (with the A/D bits it wrote, unless its slot is read-only).
        var guestLeaf = new PagingEntry(state.ReadGuest(walk.Steps[^1].EntryGpa!.Value, c.Mode.EntryBytes()));

        for (int level = RootLevel; level >= 2; level--)
        {
            // The guest walked through this table: it is still a table, whatever writes it had.
            if (level >= guestLeafLevel) state = state.SetPage(state.Pages[page].WithWriteFlooding(0));
            int index = ShadowIndex(level, gva);
            var child = ChildKey(page, level, index, walk, t, guestLeaf, c);
            if (state.Pages[page].Entries.GetValueOrDefault(index) is ShadowEntry.Table link)
            {
                // Follow it, except where a large guest page is split: a direct child built for other
                // rights (e.g. before the guest leaf was dirty) is replaced (KVM's validate_direct_spte).
                if (level != guestLeafLevel || link.Child.Equals(child))
                {
                    page = link.Child;
                    continue;
                }
                state = state.RemoveEntry(page, index);
            }
            state = state.GetPage(child).SetEntry(page, index, new ShadowEntry.Table(child));
            page = child;
        }

        ulong gfn = t.Gpa >> 12;
        bool write = access.Type == AccessType.Write;
        bool writable = !slot.ReadOnly && guestLeaf.IsDirty && (!slot.DirtyLogging || write);
        if (writable && write) (writable, state) = state.TryUnsync(gfn);
        else if (writable) writable = !state.IsWriteProtected(gfn);

        var leaf = new ShadowEntry.Leaf(gfn, slot.HostPfn(gfn), t.Rights, writable);
        state = state.SetEntry(page, ShadowIndex(1, gva), leaf);
        if (write) state = state.MarkDirty(slot, gfn);
        // KVM's FNAME(fetch) prefetches unless mmu_set_spte found the entry already as wanted (RET_PF_SPURIOUS);
        // the model fills only after a miss, where the entry changes or (a write whose unsync fails) KVM emulates.
        if (Config.Prefetch) state = state.Prefetch(page, ShadowIndex(1, gva), t.Rights);
        return new ShadowStepped(state, new ShadowResult.Translated(t.Gpa, (leaf.HostPfn << 12) | (t.Gpa & 0xFFF), Faulted: true));
    }

    /// <summary>The key of the page a fill links below entry <paramref name="index"/> of <paramref name="parent"/> at <paramref name="level"/>.</summary>
    static ShadowKey ChildKey(ShadowKey parent, int level, int index, WalkExplanation walk, WalkResult.Translated t, PagingEntry guestLeaf, PagingControls c)
    {
        int guestLeafLevel = walk.Steps[^1].Level;
        var role = parent.Role.WithLevel(level - 1);
        int quadrant = role.Has4ByteGpte && level - 1 == 1 ? index & 1 : 0;
        if (level > guestLeafLevel)
        {
            // The guest has a table below: shadow it, with the rights of the path down to it.
            var step = walk.Steps.Single(s => s.Level == level && s.EntryGpa is not null);
            ulong tableGfn = PagingLevels.FrameAddress(c, level, step.Entry, mapsPage: false) >> 12;
            return new ShadowKey(tableGfn, role with { Direct = false, Access = step.RightsSoFar.ToAcc(), Quadrant = quadrant });
        }
        if (level == guestLeafLevel)
        {
            // The guest maps a large page here: split it with direct pages carrying its first gfn. A
            // clean large page gives no write access (KVM's protect_clean_gpte): the first write must
            // fault so that the walk sets D, and a dirty one must not share the clean one's pages.
            ulong frames = t.Size.Bytes() >> 12;
            var access = t.Rights.ToAcc() & (guestLeaf.IsDirty ? Acc.All : ~Acc.Write);
            return new ShadowKey((t.Gpa >> 12) & ~(frames - 1), role with { Direct = true, Access = access, Quadrant = quadrant });
        }
        return new ShadowKey(DirectGfn(parent, index), role with { Quadrant = 0 });
    }
}
