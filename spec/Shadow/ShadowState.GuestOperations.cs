using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Spec.Shadow;

// GuestStore, GuestSetPaging, GuestMovCr3, Invlpg and Invpcid (docs/shadow-model.md, "Guest operations").
public sealed partial record ShadowState
{
    ShadowStepped GuestStore(ShadowOp.GuestStore g)
    {
        if (g.Size is not (4 or 8) || g.Gpa % (ulong)g.Size != 0) return Reject($"a guest store is 4 or 8 bytes, aligned ({g.Size} at {Bits.Hex(g.Gpa)})");
        if (g.Gpa >> Config.MaxPhyAddr != 0) return Reject($"gpa {Bits.Hex(g.Gpa)} is beyond MAXPHYADDR {Config.MaxPhyAddr}");
        var state = Running();
        ulong gfn = g.Gpa >> 12;
        if (SlotMemory.SlotOf(Slots, gfn) is not { ReadOnly: false } slot) return new ShadowStepped(state, new ShadowResult.MmioExit(g.Gpa));

        bool emulated = false;
        if (state.IsWriteProtected(gfn))
        {
            (bool unsynced, state) = state.TryUnsync(gfn);
            emulated = !unsynced;
        }
        state = state.StoreGuest(slot, g.Gpa, g.Value, g.Size).MarkDirty(slot, gfn);
        return Done(emulated ? state.TrackedWrite(g.Gpa, g.Size) : state);
    }

    /// <summary>KVM's kvm_mmu_track_write after an emulated store to a shadowed guest table.</summary>
    ShadowState TrackedWrite(ulong gpa, int size)
    {
        int offset = (int)(gpa & 0xFFF);
        var state = this;
        foreach (var key in IndirectPagesOf(gpa >> 12).Select(p => p.Key).ToList())
        {
            if (!state.Pages.TryGetValue(key, out var page)) continue;     // zapped earlier in this loop
            int entryBytes = key.Role.Has4ByteGpte ? 4 : 8;
            bool misaligned = ((offset ^ (offset + size - 1)) & ~(entryBytes - 1)) != 0;
            bool flooded = false;
            if (!misaligned && key.Role.Level > 1)
            {
                page = page.WithWriteFlooding(page.WriteFlooding + 1);
                state = state.SetPage(page);
                flooded = page.WriteFlooding >= 3;
            }
            if (misaligned || flooded)
            {
                state = state.ZapPage(key);
                continue;
            }
            foreach (int index in WrittenIndexes(key.Role, offset))
                if (state.Pages[key].Entries.ContainsKey(index)) state = state.RemoveEntry(key, index);
        }
        return state;
    }

    /// <summary>
    /// The shadow entries a store at page offset <paramref name="offset"/> rewrites (KVM's
    /// get_written_sptes): one per 8-byte guest entry; with 4-byte entries only in the page whose
    /// quadrant holds the entry, and two at level 2 (a 4 MiB PDE is two 2 MiB shadow entries).
    /// </summary>
    public static IEnumerable<int> WrittenIndexes(ShadowRole role, int offset)
    {
        if (!role.Has4ByteGpte) return [offset / 8];
        int g = offset / 4;
        return role.Level == 1
            ? (g >> 9 == role.Quadrant ? [g & 511] : [])
            : (g >> 8 == role.Quadrant ? [2 * (g & 255), 2 * (g & 255) + 1] : []);
    }

    ShadowStepped GuestSetPaging(ShadowOp.GuestSetPaging p)
    {
        var c = p.Controls;
        if (c.MaxPhyAddr != Config.MaxPhyAddr) return Reject($"MAXPHYADDR is {Config.MaxPhyAddr} for this VM, not {c.MaxPhyAddr}");
        if (c.Cr4Pke) return Reject("KVM offers protection keys only with TDP: CR4.PKE cannot be set under shadow paging");
        if (p.Pcide && !c.Mode.IsLongMode()) return Reject($"CR4.PCIDE needs IA-32e paging, not {c.Mode.Name()} paging");
        if (!c.Mode.IsLongMode() && p.Cr3 > uint.MaxValue) return Reject($"CR3 {Bits.Hex(p.Cr3)} is wider than 32 bits in {c.Mode.Name()} paging");
        CpuStateOrGp loaded;
        try { loaded = CpuState.LoadCr3(c, p.Cr3, GuestMemoryView()); }
        catch (ArgumentException e) { return Reject(e.Message); }
        if (loaded.State is not { } cpu) return GeneralProtection(loaded.Fault!.Value);

        var state = this;
        // The role has no bit for the mode family or CR4.PSE, but they change how tables are read.
        if (GuestCpu is { } old && (old.Controls.Mode != c.Mode || old.Controls.Cr4Pse != c.Cr4Pse))
            state = state.ZapAllPages();
        // KVM's kvm_mmu_reset_context: every cached root goes; the pages stay.
        return Done((state with { GuestCpu = cpu, GuestPcide = p.Pcide, Roots = ShadowRoots.None }).LoadRoot());
    }

    /// <summary>MOV to CR3: load CR3, switch roots, and flush the new PCID unless NOFLUSH (KVM's kvm_set_cr3).</summary>
    ShadowStepped GuestMovCr3(ulong operand)
    {
        if (GuestCpu is not { Controls: var c }) return Reject("paging is off: MOV CR3 is modelled only with paging on");
        bool noFlush = GuestPcide && (operand & ShadowOp.GuestMovCr3.NoFlush) != 0;
        ulong cr3 = GuestPcide ? operand & ~ShadowOp.GuestMovCr3.NoFlush : operand;
        if (!c.Mode.IsLongMode() && cr3 > uint.MaxValue) return Reject($"CR3 {Bits.Hex(cr3)} is wider than 32 bits in {c.Mode.Name()} paging");
        var loaded = CpuState.LoadCr3(c, cr3, GuestMemoryView());
        if (loaded.State is not { } cpu) return GeneralProtection(loaded.Fault!.Value);

        var state = (this with { GuestCpu = cpu }).SwitchRoot();
        return Done(noFlush ? state : state.FlushPcid(state.CurrentPcid));
    }

    ShadowStepped Invlpg(ulong gva)
    {
        if (GuestCpu is null) return Reject("paging is off");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        var state = Running();
        if (mode.IsLongMode() && !PageWalk.IsCanonical(mode, gva)) return Done(state);
        // INVLPG also removes global translations of every PCID: KVM does not know which entries are global, so every root.
        return Done(state.InvalidateAddress(gva, state.Roots.All));
    }

    /// <summary>KVM's kvm_handle_invpcid (docs/shadow-model.md, "Invpcid").</summary>
    ShadowStepped Invpcid(ShadowOp.Invpcid op)
    {
        if (GuestCpu is null) return Reject("paging is off");
        var mode = GuestCpu.Controls.Mode;
        if (!mode.IsLongMode() && op.Gva > uint.MaxValue) return Reject($"linear addresses are 32 bits in {mode.Name()} paging");
        if (op.Type > ShadowOp.Invpcid.AllNonGlobal) return GeneralProtection(GpReason.InvpcidType);
        bool oneContext = op.Type is ShadowOp.Invpcid.IndividualAddress or ShadowOp.Invpcid.SingleContext;
        if (op.Pcid > 0xFFF || (oneContext && !GuestPcide && op.Pcid != 0)) return GeneralProtection(GpReason.InvpcidPcid);
        if (op.Type == ShadowOp.Invpcid.IndividualAddress && mode.IsLongMode() && !PageWalk.IsCanonical(mode, op.Gva))
            return GeneralProtection(GpReason.NonCanonical);

        var state = Running();
        int pcid = (int)op.Pcid;
        return Done(op.Type switch
        {
            // KVM's kvm_mmu_invpcid_gva: the roots of that PCID, current or previous.
            ShadowOp.Invpcid.IndividualAddress => state.InvalidateAddress(op.Gva, state.Roots.All.Where(r => r.Pcid(GuestPcide) == pcid)),
            ShadowOp.Invpcid.SingleContext => state.FlushPcid(pcid),
            // KVM marks no entry global, so "all but globals" does what "all" does.
            _ => state.FlushAllPcids(),
        });
    }
}
