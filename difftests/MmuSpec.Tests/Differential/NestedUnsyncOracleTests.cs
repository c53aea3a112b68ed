using System.Collections.Immutable;
using System.Text.Json.Nodes;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Nested;
using MmuSpec.Harness.Running;
using MmuSpec.Impl.Nested;
using MmuSpec.Spec.Ept;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// Oracle 2 in the nested-ept property (docs/nested-ept.md, "Oracle 2 in the property"): <see cref="NestedEptMachine"/>
/// allows an L2 access the answer of a guest-physical mapping cached since the last invalidation that covers it, with
/// no EPT A/D write and, with EPT A/D, a write only through a mapping cached dirty; the family accepts such an answer
/// from the unsync impl (the trace says why) and the strict impl still gives the spec's.
/// </summary>
public sealed class NestedUnsyncOracleTests
{
    const ulong RWX = 7, R = 1, X = 4, WB = 6 << 3, A = 1 << 8, D = 1 << 9;
    // One 4-level tree for Gpa4 (as NestedEptMmuTests): PML4 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, PTE @ 0x4020.
    const ulong Gpa4 = 0x80_8060_4567, Pte = 0x4020;
    static readonly EptPointer Eptp = EptPointer.Create(0x1000), EptpAD = EptPointer.Create(0x1000, accessedDirty: true);

    static ImmutableArray<NestedEptOp> Tree(ulong pte, EptPointer eptp) =>
    [
        new NestedEptOp.CreateSlot(0, 0, 0x40, 0x1000),
        new NestedEptOp.L1Store(0x1008, 0x2000 | RWX, 8),
        new NestedEptOp.L1Store(0x2010, 0x3000 | RWX, 8),
        new NestedEptOp.L1Store(0x3018, 0x4000 | RWX, 8),
        new NestedEptOp.L1Store(Pte, 0x20000 | pte, 8),
        new NestedEptOp.LoadEptp(eptp),
    ];

    static (NestedEptMachine Before, VmResult Now) Run(IEnumerable<NestedEptOp> ops, NestedEptOp.L2Access last)
    {
        var m = NestedEptMachine.Create(EptCapabilities.Default.WithMaxPhyAddr(46));
        foreach (var op in ops) (m, _) = m.Step(op);
        var (_, now) = m.Step(last);
        return (m, now);
    }

    static readonly NestedEptResult.Translated Old = new(Gpa4, 0x20567, 0x1020567);
    static readonly NestedEptOp.L2Access Read = new(Gpa4, AccessType.Read), Write = new(Gpa4, AccessType.Write);

    [Fact]
    public void A_translation_from_before_an_L1_store_is_allowed_until_an_invalidation_covers_it()
    {
        var ops = Tree(RWX | WB, Eptp).AddRange((NestedEptOp[])[Read, new NestedEptOp.L1Store(Pte, 0, 8)]);
        var (before, now) = Run(ops, Read);
        Assert.IsType<NestedEptResult.EptExit>(now);
        Assert.Same(before, before.ServedFromCache(Read, Old, out string why));
        Assert.Contains("cached from L1 memory", why);
        // INVEPT single-context with another EPTP of the same EP4TA, or a violation at the gpa, invalidates it.
        foreach (var invalidation in new NestedEptOp[] { new NestedEptOp.Invept(InveptType.SingleContext, EptpAD), new NestedEptOp.L2Access(Gpa4 + 8, AccessType.Read) })
        {
            var (after, _) = Run(ops.Add(invalidation), Read);
            Assert.Null(after.ServedFromCache(Read, Old, out why));
            Assert.Contains("no guest-physical mapping cached since the last invalidation", why);
        }
        // INVEPT of another EP4TA does not.
        var (other, _) = Run(ops.Add(new NestedEptOp.Invept(InveptType.SingleContext, EptPointer.Create(0x5000))), Read);
        Assert.NotNull(other.ServedFromCache(Read, Old, out _));
        // A translation no allowed moment gave is refused (the L1 gpa, or the hpa the slots give now).
        Assert.Null(before.ServedFromCache(Read, Old with { L1Gpa = 0x21567 }, out _));
        Assert.Null(before.ServedFromCache(Read, Old with { Hpa = 0x1021567 }, out _));
    }

    [Fact]
    public void With_EPT_AD_a_cached_write_needs_a_leaf_that_was_dirty()
    {
        // Clean leaf (A set, D clear): a write must walk and set D, so a cached answer is refused.
        var clean = Tree(RWX | WB | A, EptpAD).AddRange((NestedEptOp[])[Read, new NestedEptOp.L1Store(Pte, 0x20000 | R | WB | A, 8)]);
        var (before, _) = Run(clean, Write);
        Assert.Null(before.ServedFromCache(Write, Old, out string why));
        Assert.Contains("with its leaf already dirty", why);
        // Dirty leaf: allowed, and the machine is the one before (no A/D write) while the walk now would set A.
        var dirty = Tree(RWX | WB | A | D, EptpAD).AddRange((NestedEptOp[])[Write, new NestedEptOp.L1Store(Pte, 0x20000 | RWX | WB, 8)]);
        var (dirtyBefore, walked) = Run(dirty, Write);
        Assert.Equal(Old, walked);
        var cached = dirtyBefore.ServedFromCache(Write, Old, out _);
        Assert.Same(dirtyBefore, cached);
        Assert.NotEqual(dirtyBefore.State.Host, dirtyBefore.Step(Write).Next.State.Host);
    }

    [Fact]
    public void The_family_accepts_the_unsync_impls_stale_answer_and_says_why()
    {
        var ops = Tree(RWX | WB, Eptp).AddRange((NestedEptOp[])[Read, new NestedEptOp.L1Store(Pte, 0x20000 | X | WB, 8), Read]);
        var unsync = new NestedEptCase(new NestedEptConfig(46, ExecuteOnly: true, NestedRootPolicy.KeepAndResync, Unsync: true), ops, []);
        var report = Families.NestedEpt.Run(unsync);
        Assert.True(report.Agreed, report.Render());
        var stale = report.Records.Single(r => r.Allowance is not null);
        Assert.Equal(ops.Length - 1, stale.Index);
        Assert.StartsWith("VM exit to L1", stale.Spec, StringComparison.Ordinal);
        Assert.Equal(Old.ToString(), stale.Impl);
        // The strict MMU gives the spec's answer at every step.
        var strict = Families.NestedEpt.Run(unsync with { Config = unsync.Config with { Unsync = false } });
        Assert.True(strict.Agreed);
        Assert.All(strict.Records, r => Assert.Null(r.Allowance));
        Assert.Contains("(allowed: a guest-physical mapping cached", CaseRuns.Trace(unsync).Rows[^1].Impl);
    }

    [Fact]
    public void Unsync_is_drawn_from_a_stream_of_its_own_so_the_cases_are_the_ones_drawn_before()
    {
        for (int seed = 0; seed < 40; seed++)
        {
            var drawn = NestedEptGen.Build(seed, size: 30, new NestedEptGenOptions());
            var strict = NestedEptGen.Build(seed, size: 30, new NestedEptGenOptions(Unsync: false));
            Assert.Equal(strict with { Config = strict.Config with { Unsync = drawn.Config.Unsync } }, drawn);
        }
        Assert.Contains(Enumerable.Range(0, 40), s => NestedEptGen.Build(s, 30, new NestedEptGenOptions()).Config.Unsync);
        Assert.Contains(Enumerable.Range(0, 40), s => !NestedEptGen.Build(s, 30, new NestedEptGenOptions()).Config.Unsync);
    }

    [Fact]
    public void The_unsync_switch_is_in_the_cases_JSON_and_a_file_without_it_is_a_strict_case()
    {
        var c = NestedEptGen.Build(5, size: 20, new NestedEptGenOptions(Unsync: true, StaleBursts: true));
        string json = CaseJson.ToJson(c);
        Assert.Equal(c, CaseJson.Parse(json));
        var node = JsonNode.Parse(json)!;
        ((JsonObject)node["config"]!).Remove("unsync");
        Assert.Equal(c with { Config = c.Config with { Unsync = false } }, CaseJson.Parse(node.ToJsonString()));
        node["config"]!["unsync"] = "yes";
        var e = Assert.Throws<InputException>(() => CaseJson.Parse(node.ToJsonString()));
        Assert.Contains("config.unsync", e.Message, StringComparison.Ordinal);
    }
}
