using System.Runtime.CompilerServices;
using MmuSpec.Impl.Paging;

namespace MmuSpec.Impl.Nested;

/// <summary>
/// The processor's combined mappings for L2 and KVM's handling of what invalidates them (docs/nested-ept.md, "VPIDs, VM
/// entries and exits, EPTP switching"): a small gva TLB tagged by physical VPID and shadow root, filled by a successful
/// 2D walk and used instead of it. L0 runs L2 with vpid02 when L1 enables VPID for it, else with L1's vpid01
/// (prepare_vmcs02_early); L1's INVVPID of any type flushes vpid02 (handle_invvpid: one vpid02 for all of L1's VPIDs);
/// L1&lt;-&gt;L2 transitions flush as nested_vmx_transition_tlb_flush does. On only when <see cref="NestedEptVm.Create"/>
/// asks for it (the other properties' L2 caches nothing).
/// </summary>
internal sealed unsafe partial class NestedEptMmu
{
    /// <summary>
    /// A combined mapping: one 4 KiB gva page of a physical VPID and shadow root, and what L2's walk and the EPT gave it.
    /// The hardware tags it by the shadow root's address, one per L1 EP4TA and role (walk length, EPT A/D), so the tag is
    /// those EPTP bits: an EPTP with the other A/D bit over the same tables has other mappings.
    /// </summary>
    private struct GvaTlbEntry
    {
        public ushort Vpid;        // 0: free
        public bool Dirty;         // filled by a write: L2's leaf and (with EPT A/D) the EPT leaf were dirty
        public byte EptRights;     // the EPT rights this fill proved (bit 0 R, 1 W, 2 X)
        public uint L2Rights, Key; // L2's rights ANDed over its walk, the leaf's protection key
        public ulong Tag, GvaPage, L2GpaPage, L1GpaPage, HpaPage;
    }

    // The EPTP's address, walk length and A/D bits: which shadow root the mapping was made through.
    private ulong GvaTag(ulong eptp) => eptp & (_addressMask | 0x78);

    private const int GvaTlbEntries = 16;
    private const ushort Vpid01 = 1, Vpid02 = 2;

    private readonly bool _gvaTlbEnabled;
    private readonly GvaTlbEntry[] _gvaTlb = new GvaTlbEntry[GvaTlbEntries];
    private int _gvaTlbNext; // FIFO eviction

    // The VMCS12 fields of the last VM entry (before the first: VPID 1, as the spec assumes), and KVM's nested.last_vpid.
    private bool _inL2, _vpid12Enabled = true, _eptpSwitching;
    private ushort _vpid12 = 1, _lastVpid12 = 1;
    private ulong _eptpList;
    private long _gvaHits, _gvaFills, _gvaFlushes;

    public NestedGvaTlbCounters GvaTlbCounters => new(_gvaHits, _gvaFills, _gvaFlushes);

    // prepare_vmcs02_early_rare: L2 runs with vpid02 when VMCS12 enables VPID, else shares L1's vpid01 (VPID 0 to L1).
    private ushort L2PhysicalVpid => _vpid12Enabled ? Vpid02 : Vpid01;

    // vmx_get_current_vpid, what a guest TLB flush (KVM_REQ_TLB_FLUSH_GUEST) flushes: vpid02 only while L2 runs with VPID
    // (upstream 2657b82a78f1).
    private ushort CurrentVpid => _inL2 && _vpid12Enabled ? Vpid02 : Vpid01;

    public NestedOutcome VmExit()
    {
        ThrowIfDisposed();
        if (!_inL2)
            return Reject("L2 is not running");
        _inL2 = false;
        TransitionFlush(entry: false);
        return NestedOutcome.Ok;
    }

    public NestedOutcome VmEntry(bool vpidEnabled, ushort vpid, bool eptpSwitching, ulong eptpList)
    {
        ThrowIfDisposed();
        if (_eptp == 0)
            return Reject("no EPTP: L1 has not entered L2");
        if (vpidEnabled && vpid == 0)
            return Reject("VM entry with enable VPID and VPID 0 fails its control checks");
        if (eptpSwitching && (eptpList & 0xFFF) != 0 | eptpList >> _maxPhyAddr != 0)
            return Reject($"EPTP-list address 0x{eptpList:X} is not page-aligned below MAXPHYADDR");
        (_vpid12Enabled, _vpid12, _eptpSwitching, _eptpList) = (vpidEnabled, vpid, eptpSwitching, eptpList);
        EnteredL2();
        return NestedOutcome.Ok;
    }

    /// <summary>Any VM entry (VMRESUME, or the EPTP and paging-state loads that enter L2): the transition flush.</summary>
    private void EnteredL2()
    {
        _inL2 = true;
        TransitionFlush(entry: true);
    }

    /// <summary>
    /// nested_vmx_transition_tlb_flush: without VPID for L2, VPID 0's linear and combined mappings go at every entry and
    /// exit (KVM_REQ_TLB_FLUSH_GUEST, the current VPID: vpid01, which L2 shares then); with VPID, only a VM entry with
    /// a VPID12 other than the last one flushes vpid02 (KVM does not track VPID12 history). With EPT, L2 has its own tag.
    /// </summary>
    private void TransitionFlush(bool entry)
    {
        if (!_gvaTlbEnabled)
            return;
        if (!_vpid12Enabled)
        {
            FlushGva(CurrentVpid, gvaPage: null);
            return;
        }
        if (entry && _vpid12 != _lastVpid12)
        {
            _lastVpid12 = _vpid12;
            FlushGva(Vpid02, gvaPage: null);
        }
    }

    /// <summary>
    /// handle_invvpid: a descriptor VPID of 0 fails types 0, 1 and 3 (VMfailValid); every type then flushes vpid02, the
    /// one physical VPID L2's VPIDs share: the address for individual-address, the whole context otherwise (globals too).
    /// </summary>
    public NestedOutcome Invvpid(InvvpidKind type, ushort vpid, ulong gva)
    {
        ThrowIfDisposed();
        if (_inL2)
            return Reject("INVVPID is L1's instruction and L2 is running");
        if (vpid == 0 && type != InvvpidKind.AllContexts)
            return Reject($"INVVPID {type} with VPID 0 fails");
        switch (type)
        {
            case InvvpidKind.IndividualAddress:
                FlushGva(Vpid02, gva >> PageShift);
                break;
            case InvvpidKind.SingleContext or InvvpidKind.AllContexts or InvvpidKind.SingleContextRetainingGlobals:
                FlushGva(Vpid02, gvaPage: null);
                break;
            default:
                return Reject($"INVVPID type {(int)type} is not supported");
        }
        return NestedOutcome.Ok;
    }

    /// <summary>
    /// handle_vmfunc / nested_vmx_eptp_switching: EPTP switching off, an index of 512 or more, an entry L1's memory does not
    /// hold or an EPTP VM entry would refuse is a VM exit to L1 (reason VMFUNC); else the EPTP switches as at an entry
    /// (the cached root found), and without VPID for L2, KVM flushes L2's mappings (KVM_REQ_TLB_FLUSH_GUEST).
    /// </summary>
    public NestedOutcome Vmfunc(uint index)
    {
        ThrowIfDisposed();
        if (!_inL2)
            return Reject("L2 is not running");
        if (!_eptpSwitching || index >= 512 || !TryRead(_eptpList + index * 8UL, out ulong next, out _) ||
            (next != _eptp && EptpProblem(next) is not null))
        {
            _inL2 = false;
            TransitionFlush(entry: false);
            return new NestedOutcome(NestedOutcomeKind.VmfuncExit, Gpa: index);
        }
        if (next != _eptp)
        {
            SwitchRoot(next);
            if (!_vpid12Enabled && _gvaTlbEnabled)
                FlushGva(CurrentVpid, gvaPage: null);
        }
        return NestedOutcome.Ok;
    }

    /// <summary>Drops the combined mappings of <paramref name="vpid"/> (all of them, or of one gva page).</summary>
    private void FlushGva(ushort vpid, ulong? gvaPage)
    {
        _gvaFlushes++;
        for (int i = 0; i < _gvaTlb.Length; i++)
        {
            ref GvaTlbEntry e = ref _gvaTlb[i];
            if (e.Vpid == vpid && (gvaPage is not ulong p || e.GvaPage == p))
                e.Vpid = 0;
        }
    }

    /// <summary>INVEPT: combined mappings of the EP4TA (single-context), or all (all-context), whatever the VPID.</summary>
    private void FlushGvaEp4ta(ulong? ep4ta)
    {
        if (!_gvaTlbEnabled)
            return;
        _gvaFlushes++;
        for (int i = 0; i < _gvaTlb.Length; i++)
        {
            if (ep4ta is not ulong t || (_gvaTlb[i].Tag & _addressMask) == t)
                _gvaTlb[i].Vpid = 0;
        }
    }

    /// <summary>
    /// A combined mapping for <paramref name="gva"/> in the current VPID and EP4TA that allows this access: L2's rights
    /// (CR0.WP, SMEP, SMAP, keys from <paramref name="ctx"/>, which a new paging state flushes), the EPT rights proved at the
    /// fill, and for a write a mapping filled by a write (no D bit left to set). A miss
    /// drops the page's entry, so a walk that faults leaves none behind (an EPT violation invalidates the gla's mappings).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryGvaHit(WalkContext ctx, ulong gva, AccessType type, Privilege privilege, uint pfec, out NestedOutcome hit)
    {
        ushort vpid = L2PhysicalVpid;
        ulong tag = GvaTag(_eptp), page = gva >> PageShift;
        for (int i = 0; i < _gvaTlb.Length; i++)
        {
            ref GvaTlbEntry e = ref _gvaTlb[i];
            if (e.Vpid != vpid || e.Tag != tag || e.GvaPage != page)
                continue;
            byte need = type switch { AccessType.Read => 1, AccessType.Write => 2, _ => 4 };
            if ((e.EptRights & need) != 0 && ctx.PermissionFault(pfec, privilege, e.L2Rights, e.Key) == 0 &&
                (type != AccessType.Write || e.Dirty))
            {
                _gvaHits++;
                ulong offset = gva & 0xFFF;
                hit = new NestedOutcome(NestedOutcomeKind.Translated, (e.L2GpaPage << PageShift) | offset,
                    (e.L1GpaPage << PageShift) | offset, (e.HpaPage << PageShift) | offset);
                return true;
            }
            e.Vpid = 0;
        }
        hit = default;
        return false;
    }

    /// <summary>Caches what a successful walk gave, evicting the oldest entry when full.</summary>
    private void GvaFill(ulong gva, in NestedOutcome final, AccessType type, uint rights, uint key)
    {
        _gvaFills++;
        ref GvaTlbEntry e = ref _gvaTlb[_gvaTlbNext];
        _gvaTlbNext = (_gvaTlbNext + 1) % GvaTlbEntries;
        e.Vpid = L2PhysicalVpid;
        e.Tag = GvaTag(_eptp);
        e.GvaPage = gva >> PageShift;
        e.L2GpaPage = final.Gpa >> PageShift;
        e.L1GpaPage = final.L1Gpa >> PageShift;
        e.HpaPage = final.Hpa >> PageShift;
        e.L2Rights = rights;
        e.Key = key;
        e.EptRights = type switch { AccessType.Read => 1, AccessType.Write => 3, _ => 4 };
        e.Dirty = type == AccessType.Write;
    }
}
