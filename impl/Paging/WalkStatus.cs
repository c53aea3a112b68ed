namespace MmuSpec.Impl.Paging;

/// <summary>How an access ended.</summary>
public enum WalkStatus : byte
{
    Translated,

    /// <summary>#PF; see <see cref="WalkOutcome.ErrorCode"/>.</summary>
    PageFault,

    /// <summary>#GP: non-canonical linear address in 4/5-level paging.</summary>
    GeneralProtection,
}
