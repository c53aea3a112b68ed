namespace MmuSpec.Spec.Shadow;

// Where an entry sits and how one is changed (docs/shadow-model.md, "Roles and keys", "Entries").
public sealed partial record ShadowState
{
    // ---- the shadow tables' geometry ----

    static int ShadowIndex(int level, ulong gva) => (int)((gva >> (12 + 9 * (level - 1))) & 511);

    int RootLevel => RootLevelOf(GuestCpu!.Controls);

    /// <summary>The page of <paramref name="root"/> that translates <paramref name="gva"/> (PAE and 32-bit: by gva bits 31:30).</summary>
    static ShadowKey? RootPageFor(ShadowRoot? root, ulong gva) =>
        root is null ? null : root.Pages.Length == 1 ? root.Pages[0] : root.Pages[(int)((gva >> 30) & 3)];

    /// <summary>The current root's page that translates <paramref name="gva"/>.</summary>
    ShadowKey? RootPageFor(ulong gva) => RootPageFor(Root, gva);

    /// <summary>The first frame entry <paramref name="index"/> of direct page <paramref name="key"/> maps (the computed-direct-gfn patch, Lai Jiangshan, 2010, with its quadrant correction).</summary>
    public static ulong DirectGfn(ShadowKey key, int index) =>
        key.Gfn + ((ulong)key.Role.Quadrant << 9) + ((ulong)index << (9 * (key.Role.Level - 1)));

    // ---- entries ----

    ShadowState SetPage(ShadowPage page) => this with { Pages = Pages.SetItem(page.Key, page) };

    ShadowState SetEntry(ShadowKey page, int index, ShadowEntry entry) => SetPage(Pages[page].With(index, entry));

    ShadowState RemoveEntry(ShadowKey page, int index) => SetPage(Pages[page].Without(index));

    ShadowState UpdateLeaves(Func<ShadowEntry.Leaf, bool> which, Func<ShadowEntry.Leaf, ShadowEntry.Leaf> update)
    {
        var state = this;
        foreach (var (page, index, leaf) in Leaves().Where(l => which(l.Leaf)).ToList())
            state = state.SetEntry(page, index, update(leaf));
        return state;
    }

    ShadowState RemoveLeaves(Func<ShadowEntry.Leaf, bool> which)
    {
        var state = this;
        foreach (var (page, index, _) in Leaves().Where(l => which(l.Leaf)).ToList())
            state = state.RemoveEntry(page, index);
        return state;
    }
}
