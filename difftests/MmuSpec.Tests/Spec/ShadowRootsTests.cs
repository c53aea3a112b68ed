using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using Xunit;

namespace MmuSpec.Tests.Spec;

/// <summary>
/// Known answers for the cached-root list's switch (docs/shadow-model.md, "GuestMovCr3", step 2:
/// KVM's cached_root_find_and_keep_current and cached_root_find_without_current), by hand.
/// </summary>
public sealed class ShadowRootsTests
{
    // A 4-level guest: CR0.PG|WP|PE, CR4.PAE, EFER.LME|LMA.
    static readonly ShadowRole Role = ShadowRole.Base(PagingControls.FromRegisters(cr0: 0x8001_0001, cr4: 0x20, efer: 0x500)).WithLevel(4);

    static ShadowRootInfo R(ulong pgd) => new(pgd, Role, new ShadowRoot([new ShadowKey(pgd >> 12, Role)]), Unsync: false);

    static readonly ShadowRootInfo A = R(0x1000), B = R(0x2000), C = R(0x3000), D = R(0x4000), E = R(0x5000);

    [Fact]
    public void A_usable_current_root_stays()
    {
        var roots = new ShadowRoots(A, [B, C]);
        Assert.Equal((roots, (ShadowRootInfo?)null), roots.Switch(A.Pgd, Role));
    }

    [Fact]
    public void A_hit_among_the_previous_roots_becomes_current_and_the_old_current_root_the_most_recent_previous_one()
    {
        var (roots, reused) = new ShadowRoots(A, [B, C, D]).Switch(C.Pgd, Role);
        Assert.Equal(new ShadowRoots(C, [A, B, D]), roots);
        Assert.Equal(C, reused);
    }

    [Fact]
    public void A_miss_demotes_the_current_root_and_frees_the_least_recently_used_beyond_three()
    {
        var (roots, reused) = new ShadowRoots(A, [B, C, D]).Switch(E.Pgd, Role);
        Assert.Equal(new ShadowRoots(null, [A, B, C]), roots);
        Assert.Null(reused);
    }

    [Fact]
    public void A_root_built_with_another_role_is_not_usable()
    {
        var (roots, reused) = new ShadowRoots(A, [B]).Switch(B.Pgd, Role.WithLevel(5));
        Assert.Equal(new ShadowRoots(null, [A, B]), roots);
        Assert.Null(reused);
    }

    [Fact]
    public void Without_a_current_root_a_miss_keeps_the_previous_roots_as_they_are()
    {
        var (roots, reused) = new ShadowRoots(null, [B, C, D]).Switch(E.Pgd, Role);
        Assert.Equal(new ShadowRoots(null, [B, C, D]), roots);
        Assert.Null(reused);
    }
}
