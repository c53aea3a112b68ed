using System.Diagnostics.CodeAnalysis;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// A guest vCPU's paging state: controls, CR3 and the PAE PDPTE registers, over guest memory it does
/// not own. Translates linear addresses with <see cref="Access"/>. Not thread-safe.
/// </summary>
public sealed partial class GuestVcpu
{
    private readonly GuestPhysicalMemory _memory;
    private WalkContext _context;
    private ulong _cr3;

    /// <summary>Root table (or PAE PDPT) address derived from CR3.</summary>
    private ulong _rootTable;

    private PdpteRegisters _pdptes;

    /// <exception cref="ArgumentException">Controls out of range, or CR3 would raise #GP in this mode.</exception>
    public GuestVcpu(GuestPhysicalMemory memory, PagingControls controls, ulong cr3)
    {
        ArgumentNullException.ThrowIfNull(memory);
        _memory = memory;
        WalkContext context = WalkContext.Create(controls);
        switch (Cr3Loader.TryLoad(context, memory, cr3, out ulong root, out PdpteRegisters pdptes))
        {
            case Cr3Loader.Result.OutOfRange:
                ThrowHelper.ArgumentOutOfRange(nameof(cr3), "CR3 must fit in 32 bits in 32-bit and PAE paging.");
                break;
            case Cr3Loader.Result.GeneralProtection:
                ThrowHelper.Argument(nameof(cr3), "CR3 (or the PDPTEs it points to) is invalid for this paging mode.");
                break;
        }
        Commit(context, cr3, root, pdptes);
    }

    private GuestVcpu(GuestPhysicalMemory memory, WalkContext context, ulong cr3, ulong root, in PdpteRegisters pdptes)
    {
        _memory = memory;
        Commit(context, cr3, root, pdptes);
    }

    /// <summary>
    /// A vCPU that has just executed MOV CR3 under <paramref name="controls"/> (PAE: loading the PDPTEs
    /// from <paramref name="memory"/>), or null with the reason when that raises #GP or CR3 is not a
    /// value of this mode. The non-throwing form of the constructor.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Unknown mode or MAXPHYADDR outside 36..52.</exception>
    internal static GuestVcpu? TryCreate(GuestPhysicalMemory memory, in PagingControls controls, ulong cr3, out Cr3Loader.Result result)
    {
        WalkContext context = WalkContext.Create(controls);
        result = Cr3Loader.TryLoad(context, memory, cr3, out ulong root, out PdpteRegisters pdptes);
        return result == Cr3Loader.Result.Loaded ? new GuestVcpu(memory, context, cr3, root, pdptes) : null;
    }

    /// <summary>
    /// A vCPU that has just executed MOV CR3 under <paramref name="controls"/> (PAE: loading the PDPTE
    /// registers from <paramref name="memory"/>, with the same checks as <see cref="LoadCr3"/>), or null
    /// with why MOV CR3 would raise #GP in <paramref name="error"/>: for callers that report bad input.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Unknown mode, MAXPHYADDR outside 36..52, or CR3 &gt;= 2^32 in 32-bit/PAE paging.</exception>
    public static GuestVcpu? TryBoot(GuestPhysicalMemory memory, PagingControls controls, ulong cr3, out Cr3LoadError error)
    {
        ArgumentNullException.ThrowIfNull(memory);
        WalkContext context = WalkContext.Create(controls);
        Cr3Loader.Result result = Cr3Loader.TryLoad(context, memory, cr3, out ulong root, out PdpteRegisters pdptes, out int bad);
        switch (result)
        {
            case Cr3Loader.Result.Loaded:
                error = default;
                return new GuestVcpu(memory, context, cr3, root, pdptes);
            case Cr3Loader.Result.OutOfRange:
                ThrowHelper.ArgumentOutOfRange(nameof(cr3), "CR3 must fit in 32 bits in 32-bit and PAE paging.");
                break;
        }
        if (bad < 0)
        {
            error = new Cr3LoadError(Cr3Fault.ReservedBits, -1, 0, 0, cr3 & context.Cr3ReservedMask);
            return null;
        }
        ulong gpa = root + (ulong)(bad * sizeof(ulong));
        error = memory.TryRead64(gpa, out ulong pdpte)
            ? new Cr3LoadError(Cr3Fault.PdpteReservedBits, bad, gpa, pdpte, pdpte & context.PdpteReservedMask)
            : new Cr3LoadError(Cr3Fault.PdptUnbacked, bad, gpa, 0, 0);
        return null;
    }

    public ulong Cr3 => _cr3;

    /// <summary>The precomputed walk policy for the current controls (for the shadow MMU's checks).</summary>
    internal WalkContext Context => _context;

    /// <summary>Root table address (4/5-level and 32-bit paging: the table CR3 names; PAE: the PDPT).</summary>
    internal ulong RootTable => _rootTable;

    public PagingControls Controls => _context.Controls;

    /// <summary>PAE PDPTE register <paramref name="i"/> (0..3): the value last loaded in PAE mode, else 0.</summary>
    public ulong Pdpte(int i)
    {
        if ((uint)i >= PdpteRegisters.Count)
            ThrowHelper.ArgumentOutOfRange(nameof(i), "PDPTE register index must be 0..3.");
        return _pdptes[i];
    }

    /// <summary>
    /// Changes the paging controls. Returns false (#GP, nothing changes) when the current CR3 is not valid
    /// for the new mode or, when the PDPTEs are reloaded, they cannot be loaded.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Unknown mode or MAXPHYADDR outside 36..52.</exception>
    public bool SetControls(PagingControls c)
    {
        WalkContext context = WalkContext.Create(c);
        if (c.Mode == PagingMode.Pae && !ReloadsPdptes(Controls, c))
        {
            // SDM 4.4.1 (KVM kvm_set_cr0/kvm_set_cr4): staying in PAE paging, only a change of
            // CR4.PSE or CR4.SMEP (of the bits modelled) re-reads the PDPTEs; every other control
            // change keeps the registers, even if the PDPT in memory has changed since.
            PdpteRegisters kept = _pdptes;
            Commit(context, _cr3, _rootTable, kept);
            return true;
        }
        if (Cr3Loader.TryLoad(context, _memory, _cr3, out ulong root, out PdpteRegisters pdptes) != Cr3Loader.Result.Loaded)
            return false;
        Commit(context, _cr3, root, pdptes);
        return true;
    }

    /// <summary>Entering PAE paging, or changing CR4.PSE or CR4.SMEP in it, loads the PDPTEs (SDM 4.4.1).</summary>
    private static bool ReloadsPdptes(PagingControls before, PagingControls after) =>
        before.Mode != PagingMode.Pae || before.Cr4Pse != after.Cr4Pse || before.Cr4Smep != after.Cr4Smep;

    /// <summary>MOV to CR3. Returns false (#GP, nothing changes) for reserved CR3 bits or bad PAE PDPTEs.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value of 2^32 or more in 32-bit or PAE paging.</exception>
    public bool LoadCr3(ulong cr3)
    {
        switch (Cr3Loader.TryLoad(_context, _memory, cr3, out ulong root, out PdpteRegisters pdptes))
        {
            case Cr3Loader.Result.OutOfRange:
                ThrowHelper.ArgumentOutOfRange(nameof(cr3), "CR3 must fit in 32 bits in 32-bit and PAE paging.");
                return false;
            case Cr3Loader.Result.GeneralProtection:
                return false;
        }
        Commit(_context, cr3, root, pdptes);
        return true;
    }

    /// <summary>
    /// MOV to CR3 under the current controls, for the shadow MMU's MOV CR3 hot path: outside PAE paging only
    /// <see cref="Cr3Loader.TryRoot"/>'s part of the rule applies, so this stores CR3 and the root without
    /// re-committing the unchanged context (a GC write barrier) or zeroing PDPTE registers it does not load; PAE
    /// paging (and a CR3 that is out of range, which throws) goes through <see cref="LoadCr3"/>.
    /// </summary>
    internal bool MovCr3(ulong cr3)
    {
        WalkContext ctx = _context;
        if (ctx.UsesPdpteRegisters)
            return LoadCr3(cr3);
        switch (Cr3Loader.TryRoot(ctx, cr3, out ulong root))
        {
            case Cr3Loader.Result.OutOfRange:
                return LoadCr3(cr3);
            case Cr3Loader.Result.GeneralProtection:
                return false;
        }
        _cr3 = cr3;
        _rootTable = root;
        return true;
    }

    [MemberNotNull(nameof(_context))]
    private void Commit(WalkContext context, ulong cr3, ulong root, in PdpteRegisters pdptes)
    {
        _context = context;
        _cr3 = cr3;
        _rootTable = root;
        if (context.UsesPdpteRegisters)
            _pdptes = pdptes; // outside PAE the registers keep their last PAE value
    }
}
