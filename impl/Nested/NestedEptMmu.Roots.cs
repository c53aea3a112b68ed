using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Nested;

internal sealed unsafe partial class NestedEptMmu
{
    // KVM_MMU_NUM_PREV_ROOTS.
    private const int PreviousRoots = 3;

    // The current EPTP (0: L2 never entered) and its root page, null until the next L2 access loads it (kvm_mmu_load).
    private ulong _eptp;
    private NestedShadowPage? _root;

    // KVM's prev_roots, most recent first: only roots still holding a page.
    private readonly List<(ulong Eptp, NestedShadowPage Root)> _previous = new(PreviousRoots);

    private long _rootsBuilt, _cachedRootHits, _rootsFreedByInvept, _rootsKeptAtInvept;

    /// <summary>EPTP bits 5:3 plus one.</summary>
    private static int EptpLevels(ulong eptp) => (int)((eptp >> 3) & 7) + 1;

    private static bool EptpAccessedDirty(ulong eptp) => (eptp & (1UL << 6)) != 0;

    /// <summary>
    /// Why VM entry refuses <paramref name="eptp"/> (SDM Vol. 3C §25.6.11; KVM's nested_vmx_check_eptp), or null: memory
    /// type UC or WB, a 4- or 5-level walk, bits 11:7 clear, no address bit at or above MAXPHYADDR. EPT A/D (bit 6) is offered.
    /// </summary>
    private string? EptpProblem(ulong eptp)
    {
        if ((eptp & 7) is not (0 or 6))
            return "the EPTP's memory type is neither UC nor WB";
        if (EptpLevels(eptp) is not (4 or 5))
            return "the EPTP's walk length is neither 4 nor 5";
        if ((eptp & 0xF80) != 0)
            return "the EPTP sets reserved bits 11:7";
        if (eptp >> _maxPhyAddr != 0)
            return $"the EPTP sets bits at or above MAXPHYADDR {_maxPhyAddr}";
        return null;
    }

    /// <summary>
    /// nested_ept_new_eptp then kvm_mmu_new_pgd's fast switch (cached_root_find_and_keep_current): a previous root
    /// of this EPTP becomes current again without a rebuild, the old current joins the previous ones (the least
    /// recent of four is freed). The role follows from the EPTP (levels, A/D), so the EPTP is the key.
    /// </summary>
    public NestedOutcome LoadEptp(ulong eptp)
    {
        ThrowIfDisposed();
        if (EptpProblem(eptp) is string problem)
            return Reject(problem);
        EnteredL2();
        SwitchRoot(eptp);
        return NestedOutcome.Ok;
    }

    /// <summary>The root switch of an EPTP load or a VMFUNC EPTP switch.</summary>
    private void SwitchRoot(ulong eptp)
    {
        if (eptp == _eptp)
            return;
        int found = PreviousRootOf(eptp);
        NestedShadowPage? next = null;
        if (found >= 0)
        {
            next = _previous[found].Root;
            _previous.RemoveAt(found);
            _cachedRootHits++;
            InUse(next); // kvm_mmu_new_pgd: a root switched back in starts a new write-flooding count
        }
        if (_root is NestedShadowPage current)
        {
            _previous.Insert(0, (_eptp, current));
            if (_previous.Count > PreviousRoots)
            {
                _previous[^1].Root.RootCount--;
                _previous.RemoveAt(_previous.Count - 1);
            }
        }
        _eptp = eptp;
        _root = next;
    }

    /// <summary>The index of the previous root cached for <paramref name="eptp"/>, or -1 (a loop: a capturing lambda would allocate on every switch).</summary>
    private int PreviousRootOf(ulong eptp)
    {
        for (int i = 0; i < _previous.Count; i++)
        {
            if (_previous[i].Eptp == eptp)
                return i;
        }
        return -1;
    }

    /// <summary>
    /// INVEPT (SDM Vol. 3C §29.4.3.1). Under KVM's policy (handle_invept) the cached roots whose EP4TA matches a
    /// single-context descriptor, or every root for all-context, are freed and rebuilt on the next L2 access (the root
    /// load syncs their unsync pages). Under keep-and-resync they stay and their unsync pages are synced; nothing is rebuilt. An invalid single-context EPTP fails the instruction (VMfailValid).
    /// </summary>
    public NestedOutcome Invept(InveptKind type, ulong eptp)
    {
        ThrowIfDisposed();
        if (type is not (InveptKind.SingleContext or InveptKind.AllContext))
            return Reject($"INVEPT type {(int)type} is not supported");
        if (type == InveptKind.SingleContext && EptpProblem(eptp) is string problem)
            return Reject(problem);
        bool Matches(ulong rootEptp) => type == InveptKind.AllContext || (rootEptp & _addressMask) == (eptp & _addressMask);
        int matching = _root is not null && Matches(_eptp) ? 1 : 0;
        foreach (var (rootEptp, _) in _previous) // no lambda: Matches stays a struct closure, so INVEPT allocates nothing
        {
            if (Matches(rootEptp))
                matching++;
        }
        FlushGvaEp4ta(type == InveptKind.AllContext ? null : eptp & _addressMask); // combined mappings of the EP4TA, any VPID
        if (_policy == NestedRootPolicy.KeepAndResync)
        {
            _rootsKeptAtInvept += matching;
            if (_root is not null && Matches(_eptp))
                SyncKeptRoot(_root);
            foreach (var (rootEptp, root) in _previous)
                if (Matches(rootEptp))
                    SyncKeptRoot(root);
            return NestedOutcome.Ok;
        }
        _rootsFreedByInvept += matching;
        if (_root is not null && Matches(_eptp))
        {
            _root.RootCount--;
            _root = null;
        }
        for (int i = _previous.Count - 1; i >= 0; i--)
        {
            if (Matches(_previous[i].Eptp))
            {
                _previous[i].Root.RootCount--;
                _previous.RemoveAt(i);
            }
        }
        return NestedOutcome.Ok;
    }

    /// <summary>mmu_alloc_shadow_roots: the page shadowing L1's EPT root table, found in the hash or made.</summary>
    private NestedShadowPage LoadRoot(ulong rootGfn, int levels, bool accessedDirty)
    {
        var root = FindOrCreate(rootGfn, NestedRole.Create(levels, direct: false, accessedDirty, _executeOnly, access: 7));
        root.RootCount++;
        _rootsBuilt++;
        SyncLoadedRoot(root);
        return root;
    }

    /// <summary>After every page was freed: no root holds one (the current EPTP stays, its root reloads on the next access).</summary>
    private void DropAllRootsAfterZap()
    {
        _root = null;
        _previous.Clear();
    }

    public IReadOnlyList<ulong> CachedRootEptps() =>
        [_root is null ? 0 : _eptp, .. _previous.Select(r => r.Eptp)];

    public IReadOnlyList<string> InvariantProblems()
    {
        var problems = new List<string>();
        var rootRefs = new Dictionary<NestedShadowPage, int>();
        foreach (var r in (_root is null ? [] : new[] { _root }).Concat(_previous.Select(p => p.Root)))
            rootRefs[r] = rootRefs.GetValueOrDefault(r) + 1;
        foreach (var ((gfn, role), page) in _hash)
        {
            if (!page.Live || page.Gfn != gfn || page.Role.Bits != role)
                problems.Add($"{page} is hashed as (0x{gfn:X}, {new NestedRole(role)}) or was freed");
            if (!page.Role.Direct && !(_tracked.TryGetValue(gfn, out var list) && list.Contains(page)))
                problems.Add($"{page} shadows an EPT table that is not write-tracked");
            if (page.RootCount != rootRefs.GetValueOrDefault(page))
                problems.Add($"{page} has root count {page.RootCount} but {rootRefs.GetValueOrDefault(page)} cached roots");
            for (int i = 0; i < NestedShadowPage.Entries; i++)
            {
                ulong spte = page.Entry(i);
                var child = page.Children?[i];
                bool present = (spte & NestedSpte.PermissionMask) != 0;
                if (child is not null)
                {
                    if (spte != NestedSpte.Link(child))
                        problems.Add($"{page} entry {i} is 0x{spte:X}, not the link to its child {child}");
                    if (!child.Parents.Contains((page, i)))
                        problems.Add($"{child} does not list its parent {page} entry {i}");
                    if (!_hash.TryGetValue((child.Gfn, child.Role.Bits), out var hashed) || hashed != child)
                        problems.Add($"{page} entry {i} links {child}, which is not hashed");
                }
                else if (present && page.Role.Level > 1)
                    problems.Add($"{page} entry {i} is present without a child page");
                else if (present && _slots.HoldingHostFrame((spte & NestedSpte.AddressMask) >> PageShift) is null)
                    problems.Add($"{page} entry {i} maps host frame 0x{spte >> PageShift:X}, outside every slot");
            }
            foreach (var (parent, index) in page.Parents)
                if (parent.Children?[index] != page)
                    problems.Add($"{page} lists parent {parent} entry {index}, which does not link it");
        }
        foreach (var (gfn, list) in _tracked)
            foreach (var page in list)
                if (!_hash.TryGetValue((gfn, page.Role.Bits), out var hashed) || hashed != page)
                    problems.Add($"tracked {page} is not hashed");
        UnsyncProblems(problems);
        RecycleProblems(problems);
        return problems;
    }
}
