namespace MmuSpec.Impl.Shadow;

/// <summary>
/// KVM's <c>kvm_mmu_page_role</c>, packed into one 32-bit word so that a page key is (gfn, word) and a
/// role comparison is one integer compare. Layout (bit: field): 0-3 level, 4 has_4_byte_gpte,
/// 5-6 quadrant, 7 direct, 8-10 access (ACC_EXEC=1, ACC_WRITE=2, ACC_USER=4, shifted by 8), 11 invalid,
/// 12 efer_nx, 13 cr0_wp, 14 smep_andnot_wp, 15 smap_andnot_wp, 16 ad_disabled, 17 guest_mode,
/// 18 passthrough, 19 smm.
/// </summary>
public readonly record struct ShadowRole(uint Word)
{
    public const uint AccExec = 1, AccWrite = 2, AccUser = 4, AccAll = 7;

    public static ShadowRole Create(int level, bool has4ByteGpte, int quadrant, bool direct, uint access,
        bool invalid = false, bool eferNx = false, bool cr0Wp = false, bool smepAndNotWp = false, bool smapAndNotWp = false,
        bool adDisabled = false, bool guestMode = false, bool passthrough = false, bool smm = false)
    {
        if (level is < 1 or > 5) throw new ArgumentOutOfRangeException(nameof(level));
        if (quadrant is < 0 or > 3) throw new ArgumentOutOfRangeException(nameof(quadrant));
        if (access > AccAll) throw new ArgumentOutOfRangeException(nameof(access));
        uint w = (uint)level | B(has4ByteGpte, 4) | ((uint)quadrant << 5) | B(direct, 7) | (access << 8)
            | B(invalid, 11) | B(eferNx, 12) | B(cr0Wp, 13) | B(smepAndNotWp, 14) | B(smapAndNotWp, 15)
            | B(adDisabled, 16) | B(guestMode, 17) | B(passthrough, 18) | B(smm, 19);
        return new ShadowRole(w);
    }

    static uint B(bool value, int bit) => value ? 1u << bit : 0;
    bool Bit(int bit) => (Word >> bit & 1) != 0;

    public int Level => (int)(Word & 0xF);
    public bool Has4ByteGpte => Bit(4);
    public int Quadrant => (int)(Word >> 5 & 3);
    public bool Direct => Bit(7);
    public uint Access => Word >> 8 & AccAll;
    public bool Invalid => Bit(11);
    public bool EferNx => Bit(12);
    public bool Cr0Wp => Bit(13);
    public bool SmepAndNotWp => Bit(14);
    public bool SmapAndNotWp => Bit(15);
    public bool AdDisabled => Bit(16);
    public bool GuestMode => Bit(17);
    public bool Passthrough => Bit(18);
    public bool Smm => Bit(19);

    public ShadowRole WithLevel(int level) => new((Word & ~0xFu) | (uint)level);
    public ShadowRole WithQuadrant(int quadrant) => new((Word & ~(3u << 5)) | ((uint)quadrant << 5));
    public ShadowRole WithDirect(bool direct) => new((Word & ~(1u << 7)) | B(direct, 7));
    public ShadowRole WithAccess(uint access) => new((Word & ~(AccAll << 8)) | (access << 8));

    public override string ToString() =>
        $"L{Level}{(Direct ? " direct" : "")}{(Has4ByteGpte ? " 4B" : "")}{(Quadrant != 0 ? $" q{Quadrant}" : "")} "
        + $"acc={((Access & AccUser) != 0 ? "U" : "-")}{((Access & AccWrite) != 0 ? "W" : "-")}{((Access & AccExec) != 0 ? "X" : "-")}"
        + (EferNx ? " nx" : "") + (Cr0Wp ? " wp" : "") + (SmepAndNotWp ? " smep!wp" : "") + (SmapAndNotWp ? " smap!wp" : "")
        + (Invalid ? " invalid" : "");
}
