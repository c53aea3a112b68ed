using System.Collections.Immutable;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using ImplMemory = MmuSpec.Impl.Memory;
using ImplPaging = MmuSpec.Impl.Paging;

namespace MmuSpec.Harness.Walk;

/// <summary>One enumerated combination, printable when spec and impl disagree on it.</summary>
public sealed record AccessCombination(ulong Pde, ulong Pte, PagingControls Controls, Access Access)
{
    public override string ToString() =>
        $"PDE={Bits.Hex(Pde)} [{new PagingEntry(Pde).Flags(8)}] PTE={Bits.Hex(Pte)} [{new PagingEntry(Pte).Flags(8)}] {Controls} {Access}";
}

/// <summary>The totals of an enumeration and the first disagreements found.</summary>
public sealed record EnumerationReport(long Cases, long Translated, long Faults, ImmutableArray<string> Mismatches)
{
    public bool Agreed => Mismatches.IsEmpty;
}

/// <summary>
/// An exhaustive check in the style of kvm-unit-tests x86/access.c: every combination of PDE
/// flags (P, W, U, A, NX, reserved bit; or a 2 MiB PDE with P, W, U, A, D, NX, reserved bit), PTE
/// flags (P, W, U, A, D, NX, reserved bit), CPU flags (CR0.WP, EFER.NXE, CR4.SMEP, CR4.SMAP with
/// EFLAGS.AC, CR4.PKE with PKRU allowing, access-disabling or write-disabling the leaf's key) and
/// access (read, write, fetch; user, supervisor, implicit supervisor), in 4-level paging. Spec and
/// impl must agree on the outcome and on every paging entry afterwards (A/D bits).
/// Irrelevant combinations are pruned, as access.c does: AC only with SMAP, PKRU variants that
/// deny only on pages whose key can matter.
/// </summary>
public static class AccessEnumeration
{
    const ulong Pml4 = 0x1000, Pdpt = 0x2000, Pd = 0x3000, Pt = 0x4000;
    const ulong PageFrame = 0x1234_5000, LargeFrame = 0x4060_0000;
    const int Key = 1;                               // the leaf's protection key when keys are on
    const ulong P = 1, W = 2, U = 4, A = 0x20, D = 0x40, PS = 0x80, NX = 1UL << 63;
    const ulong ReservedBit51 = 1UL << 51;            // above MAXPHYADDR 46
    const ulong MisalignedBit13 = 1UL << 13;          // reserved in a 2 MiB PDE
    const int MaxPhyAddr = 46;

    /// <summary>PML4 index 1, PDPT index 2, PD index 3, PT index 4, offset 0x567.</summary>
    public const ulong Gva = (1UL << 39) | (2UL << 30) | (3UL << 21) | (4UL << 12) | 0x567;

    static ulong PdeEntry => Pd + 3 * 8;
    static ulong PteEntry => Pt + 4 * 8;

    /// <summary>All subsets of the given flags.</summary>
    static IEnumerable<ulong> Subsets(params ulong[] flags)
    {
        for (int mask = 0; mask < 1 << flags.Length; mask++)
        {
            ulong v = 0;
            for (int i = 0; i < flags.Length; i++) if ((mask >> i & 1) != 0) v |= flags[i];
            yield return v;
        }
    }

    /// <summary>(PDE, PTE or null when the PDE maps a 2 MiB page) for every table combination.</summary>
    public static IEnumerable<(ulong Pde, ulong? Pte)> TableCombinations()
    {
        foreach (ulong pdeFlags in Subsets(P, W, U, A, NX, ReservedBit51))
            foreach (ulong pteFlags in Subsets(P, W, U, A, D, NX, ReservedBit51))
                yield return (Pt | pdeFlags, PageFrame | pteFlags);
        foreach (ulong largeFlags in Subsets(P, W, U, A, D, NX, MisalignedBit13))
            yield return (LargeFrame | PS | largeFlags, null);
    }

    /// <summary>CPU flag combinations: WP x NXE x SMEP x (SMAP off | SMAP with AC=0 | SMAP with AC=1) x key variants.</summary>
    public static IEnumerable<PagingControls> ControlCombinations(bool userPage)
    {
        foreach (bool wp in new[] { false, true })
        foreach (bool nxe in new[] { false, true })
        foreach (bool smep in new[] { false, true })
        foreach (var (smap, ac) in new[] { (false, false), (true, false), (true, true) })
        {
            var c = new PagingControls(PagingMode.Long4, cr0Wp: wp, cr4Smep: smep, cr4Smap: smap, eferNxe: nxe, eflagsAc: ac, maxPhyAddr: MaxPhyAddr);
            yield return c;                                                     // keys off
            yield return c.WithCr4Pke(true).WithPkru(AccessDisable(Key));       // key access-disabled
            if (!userPage) continue;                                            // keys only judge user pages
            yield return c.WithCr4Pke(true).WithPkru(0);                        // keys on, key allows all
            yield return c.WithCr4Pke(true).WithPkru(WriteDisable(Key));        // key write-disabled
        }
    }

    static uint AccessDisable(int key) => 1u << (2 * key);
    static uint WriteDisable(int key) => 1u << (2 * key + 1);

    public static IEnumerable<Access> Accesses()
    {
        foreach (var type in new[] { AccessType.Read, AccessType.Write, AccessType.Fetch })
        foreach (var who in new[] { Privilege.Supervisor, Privilege.User, Privilege.ImplicitSupervisor })
            if (!(type == AccessType.Fetch && who == Privilege.ImplicitSupervisor))
                yield return new Access(Gva, type, who);
    }

    /// <summary>Runs every combination on both sides; stops collecting after <paramref name="maxMismatches"/>.</summary>
    public static EnumerationReport Run(int maxMismatches = 10, Action<string>? progress = null)
    {
        long cases = 0, translated = 0, faults = 0;
        var mismatches = ImmutableArray.CreateBuilder<string>();
        var accesses = Accesses().ToArray();

        var pool = new ImplMemory.NativePagePool();
        using var implMemory = new ImplMemory.GuestPhysicalMemory(pool);
        implMemory.AddSlot(0, 16);
        var baseSpec = GuestMemory.FromSlots([new Memslot(0, 16)])
            .Write64(Pml4 + 1 * 8, Pdpt | P | W | U | A)
            .Write64(Pdpt + 2 * 8, Pd | P | W | U | A);

        int combos = 0;
        foreach (var (pdeBase, pteBase) in TableCombinations())
        {
            combos++;
            bool large = pteBase is null;
            bool userPage = (pdeBase & U) != 0 && (large || (pteBase!.Value & U) != 0);
            foreach (var controls in ControlCombinations(userPage))
            {
                // The leaf carries key 1 whenever keys are on, so PKRU's verdict on key 1 is what counts.
                ulong keyBits = controls.Cr4Pke ? (ulong)Key << PagingEntry.ProtectionKeyShift : 0;
                ulong pde = large ? pdeBase | keyBits : pdeBase;
                ulong pte = large ? 0 : pteBase!.Value | keyBits;
                var specMemory = baseSpec.Write64(PdeEntry, pde).Write64(PteEntry, pte);
                var specCpu = new CpuState(controls, Pml4);
                var vcpu = new ImplPaging.GuestVcpu(implMemory, Diff.PagingVocabulary.ToImpl(controls), Pml4);

                foreach (var access in accesses)
                {
                    // Reset the impl's tables: the previous access may have set A/D bits.
                    implMemory.TryWrite64(Pml4 + 1 * 8, Pdpt | P | W | U | A);
                    implMemory.TryWrite64(Pdpt + 2 * 8, Pd | P | W | U | A);
                    implMemory.TryWrite64(PdeEntry, pde);
                    implMemory.TryWrite64(PteEntry, pte);

                    var (specResult, after) = PageWalk.Translate(specCpu, specMemory, access);
                    var implResult = Diff.PagingVocabulary.FromImpl(vcpu.Access(access.Gva, Diff.PagingVocabulary.ToImpl(access.Type), Diff.PagingVocabulary.ToImpl(access.Privilege)));
                    cases++;
                    if (specResult is WalkResult.Translated) translated++; else faults++;

                    string? diff = !specResult.Equals(implResult) ? $"spec {specResult} / impl {implResult}" : EntriesDiffer(after, implMemory);
                    if (diff is not null && mismatches.Count < maxMismatches)
                        mismatches.Add($"{new AccessCombination(pde, pte, controls, access)}: {diff}");
                }
            }
            if (progress is not null && combos % 1024 == 0) progress($"{combos} table combinations, {cases} cases");
        }
        implMemory.Dispose();
        if (pool.PagesInUse != 0) mismatches.Add($"impl leaked {pool.PagesInUse} pages");
        return new EnumerationReport(cases, translated, faults, mismatches.ToImmutable());
    }

    static string? EntriesDiffer(GuestMemory spec, ImplMemory.GuestPhysicalMemory impl)
    {
        foreach (ulong gpa in new[] { Pml4 + 1 * 8, Pdpt + 2 * 8, PdeEntry, PteEntry })
        {
            impl.TryRead64(gpa, out ulong iv);
            ulong sv = spec.Read64(gpa) ?? 0;
            if (sv != iv) return $"entry at {Bits.Hex(gpa)} after the walk: spec {Bits.Hex(sv)} / impl {Bits.Hex(iv)}";
        }
        return null;
    }
}
