using System.Runtime.CompilerServices;
using MmuSpec.Impl.Memory;

namespace MmuSpec.Impl.Paging;

/// <summary>
/// Validates a CR3 value for a paging mode and derives the root table address, loading the PAE PDPTE
/// registers when needed (SDM 4.4.1 / KVM load_pdptrs and kvm_set_cr3). Pure: commits nothing.
/// </summary>
internal static class Cr3Loader
{
    public enum Result : byte
    {
        Loaded,

        /// <summary>MOV to CR3 (or the mode change) would raise #GP.</summary>
        GeneralProtection,

        /// <summary>A 32-bit mode was given a CR3 wider than 32 bits: not a representable register value.</summary>
        OutOfRange,
    }

    public static Result TryLoad(WalkContext ctx, GuestPhysicalMemory memory, ulong cr3, out ulong root, out PdpteRegisters pdptes) =>
        TryLoad(ctx, memory, cr3, out root, out pdptes, out _);

    /// <summary>
    /// <see cref="TryLoad(WalkContext, GuestPhysicalMemory, ulong, out ulong, out PdpteRegisters)"/>, also
    /// naming the PDPTE that could not be loaded (unbacked, or present with reserved bits) in
    /// <paramref name="badPdpte"/>; -1 when none did (loaded, or CR3 itself was refused).
    /// </summary>
    public static Result TryLoad(WalkContext ctx, GuestPhysicalMemory memory, ulong cr3, out ulong root, out PdpteRegisters pdptes, out int badPdpte)
    {
        pdptes = default;
        badPdpte = -1;
        Result result = TryRoot(ctx, cr3, out root);
        if (result != Result.Loaded || !ctx.UsesPdpteRegisters)
            return result;

        for (int i = 0; i < PdpteRegisters.Count; i++)
        {
            // An unbacked PDPT cannot be loaded; a present PDPTE with reserved bits is rejected.
            if (!memory.TryRead64(root + (ulong)(i * sizeof(ulong)), out ulong pdpte) ||
                ((pdpte & PagingEntryBits.Present) != 0 && (pdpte & ctx.PdpteReservedMask) != 0))
            {
                badPdpte = i;
                return Result.GeneralProtection;
            }
            pdptes[i] = pdpte;
        }
        return Result.Loaded;
    }

    /// <summary>
    /// The part of the rule every mode shares: the value must be representable and have no reserved bit; the
    /// root table address is then CR3 under the mode's mask. (PAE's PDPTE registers are <see cref="TryLoad"/>'s.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Result TryRoot(WalkContext ctx, ulong cr3, out ulong root)
    {
        root = 0;
        if (!ctx.WideLinearAddresses && cr3 > uint.MaxValue)
            return Result.OutOfRange;
        if ((cr3 & ctx.Cr3ReservedMask) != 0)
            return Result.GeneralProtection;
        root = cr3 & ctx.RootAddressMask;
        return Result.Loaded;
    }
}
