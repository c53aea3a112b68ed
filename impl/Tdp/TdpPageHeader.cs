using System.Diagnostics;
using System.Runtime.CompilerServices;
using MmuSpec.Impl.PageTable;

namespace MmuSpec.Impl.Tdp;

/// <summary>
/// What the MMU remembers about one table page: 8 bytes, the gfn and the role packed in one word
/// (packing gfn and stolen bits, from the stolen-GPA-bits review, Sean Christopherson, 2021; docs/glossary.md).
/// KVM's kvm_mmu_page is ~184 bytes; a TDP page needs
/// none of the rest here: no per-entry gfns (a direct page computes them, see <see cref="EntryGfn"/>),
/// no unsync/write-flooding state (indirect pages only), no list link or parent pointer (trees are
/// walked from the roots), no root refcount (the two roots are fields of the MMU), no RCU head (no
/// concurrent walkers), and no table pointer: a header's slot in its slab is the table's page number,
/// so each finds the other by arithmetic (<see cref="TdpPageAllocator"/>).
/// <code>
///  63      56 55     54..52   51 ........................... 0
/// [ reserved ][mirror][level][ gfn (first frame, shared bit removed) ]
/// </code>
/// The shared ("stolen") bit needs no field: it is recovered from the role, as that review suggests. A
/// mirror page never has it; a direct page has the VM's shared bit whenever it translates a shared gpa.
/// Level 0 marks a free slot.
/// </summary>
internal readonly struct TdpPageHeader
{
    private const int GfnBits = 52;
    private const ulong GfnMask = (1UL << GfnBits) - 1;
    private const int LevelShift = GfnBits;
    private const ulong LevelMask = 0b111;
    private const int MirrorShift = 55;

    private readonly ulong _gfnAndRole;

    public TdpPageHeader(ulong gfn, int level, bool mirror)
    {
        Debug.Assert(gfn <= GfnMask && level is >= 1 and <= TableGeometry.MaxLevel, "header field out of range");
        Debug.Assert(TableGeometry.AlignDown(gfn, level + 1) == gfn, "a page's gfn is aligned to what it covers");
        _gfnAndRole = gfn | ((ulong)level << LevelShift) | ((mirror ? 1UL : 0) << MirrorShift);
    }

    /// <summary>First frame the page covers, shared bit removed.</summary>
    public ulong Gfn => _gfnAndRole & GfnMask;

    public int Level => (int)((_gfnAndRole >> LevelShift) & LevelMask);

    public bool Mirror => ((_gfnAndRole >> MirrorShift) & 1) != 0;

    /// <summary>False for the header of a page that is free (or the slab's header page itself).</summary>
    public bool InUse => Level != 0;

    public TdpPageKey Key => new(Gfn, Level, Mirror);

    /// <summary>
    /// The gfn of entry <paramref name="index"/>: the direct-page formula of the computed-direct-gfn patch (Lai Jiangshan, 2010),
    /// gfn + (index &lt;&lt; ((level - 1) * 9)), with the shared bit removed (the stolen-GPA-bits review, Sean
    /// Christopherson, 2021, and the GFN-direct-bits series, Rick Edgecombe, 2024).
    /// <para>
    /// Why the mask: the direct root is indexed by the gfn with the shared bit added back, so in a VM
    /// with shared bit 47 (gfn bit 35) the root's entries 256..511 are the shared ones. The root's gfn is
    /// 0, so for those entries gfn + (index &lt;&lt; 27) carries the shared bit, which a gfn never holds.
    /// Below the root a page covers an aligned range under the shared bit, so the sum never reaches it
    /// and the mask changes nothing; only the level whose index contains the bit (the root, at 4 levels
    /// with bit 47 and at 5 levels with bit 51) needs it. Mirror pages only ever use the lower half, so
    /// applying the same mask to them is harmless and keeps one formula.
    /// </para>
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong EntryGfn(int index, ulong sharedGfnMask) =>
        (Gfn + ((ulong)index << TableGeometry.FrameShift(Level))) & ~sharedGfnMask;

    public override string ToString() => InUse ? Key.ToString() : "(free)";
}
