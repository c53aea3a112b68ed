using MmuSpec.Spec.Paging;
using ImplPaging = MmuSpec.Impl.Paging;

namespace MmuSpec.Harness.Diff;

/// <summary>
/// The paging vocabulary in both directions: spec controls, modes, access types and privileges to
/// the impl's, and the impl's walk outcomes and controls back. The only place that knows both
/// declarations; the walk, TDP and shadow engines all translate through it.
/// </summary>
public static class PagingVocabulary
{
    public static ImplPaging.PagingControls ToImpl(PagingControls c) => new(
        ToImpl(c.Mode), c.Cr0Wp, c.Cr4Pse, c.Cr4Smep, c.Cr4Smap, c.Cr4Pke, c.EferNxe, c.EflagsAc, c.Pkru, c.MaxPhyAddr);

    public static PagingControls FromImpl(ImplPaging.PagingControls c) => new(
        FromImpl(c.Mode), c.Cr0Wp, c.Cr4Pse, c.Cr4Smep, c.Cr4Smap, c.Cr4Pke, c.EferNxe, c.EflagsAc, c.Pkru, c.MaxPhyAddr);

    // Explicit maps, not casts: the two sides' enums are independent declarations.
    public static ImplPaging.PagingMode ToImpl(PagingMode m) => m switch
    {
        PagingMode.Bits32 => ImplPaging.PagingMode.Bits32,
        PagingMode.Pae => ImplPaging.PagingMode.Pae,
        PagingMode.Long4 => ImplPaging.PagingMode.Long4,
        PagingMode.Long5 => ImplPaging.PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static PagingMode FromImpl(ImplPaging.PagingMode m) => m switch
    {
        ImplPaging.PagingMode.Bits32 => PagingMode.Bits32,
        ImplPaging.PagingMode.Pae => PagingMode.Pae,
        ImplPaging.PagingMode.Long4 => PagingMode.Long4,
        ImplPaging.PagingMode.Long5 => PagingMode.Long5,
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static ImplPaging.AccessType ToImpl(AccessType t) => t switch
    {
        AccessType.Read => ImplPaging.AccessType.Read,
        AccessType.Write => ImplPaging.AccessType.Write,
        AccessType.Fetch => ImplPaging.AccessType.Fetch,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    public static ImplPaging.Privilege ToImpl(Privilege p) => p switch
    {
        Privilege.Supervisor => ImplPaging.Privilege.Supervisor,
        Privilege.User => ImplPaging.Privilege.User,
        Privilege.ImplicitSupervisor => ImplPaging.Privilege.ImplicitSupervisor,
        _ => throw new ArgumentOutOfRangeException(nameof(p)),
    };

    public static WalkResult FromImpl(ImplPaging.WalkOutcome o) => o.Status switch
    {
        ImplPaging.WalkStatus.Translated => new WalkResult.Translated(o.Gpa, PageSizes.FromShift(o.PageShift),
            new TranslationRights(o.User, o.Writable, o.NoExecute, o.ProtectionKey)),
        ImplPaging.WalkStatus.PageFault => new WalkResult.PageFault((PageFaultErrorCode)o.ErrorCode),
        ImplPaging.WalkStatus.GeneralProtection => new WalkResult.GeneralProtection(GpReason.NonCanonical),
        _ => throw new InvalidOperationException($"impl returned unknown walk status {o.Status}"),
    };
}
