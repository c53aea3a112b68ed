using System.Collections.Immutable;
using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Shadow;
using MmuSpec.Harness.Tdp;
using NativePagePool = MmuSpec.Impl.Memory.NativePagePool;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Paging;
using MmuSpec.Spec.Shadow;
using MmuSpec.Spec.Tdp;
using Xunit;
using ImplShadow = MmuSpec.Impl.Shadow;
using ImplTdp = MmuSpec.Impl.Tdp;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The TDP and shadow engines compare, after each step, only the host frames either side changed since
/// host memory last agreed (<see cref="HostMemoryComparison"/>), as the walk family does for guest memory
/// (<see cref="WalkMemoryComparisonTests"/>). These tests write on one side only, on a frame nobody wrote
/// and on one with words, and want the step refused there and the full view to name the word; and they
/// check the impl's log holds the frame of every word a step changed, a deleted slot's included. Each
/// fails with the impl's log ignored (TakeWrittenHostFrames moving nothing).
/// </summary>
public sealed class HostMemoryComparisonTests
{
    /// <summary>A word's gpa in a writable slot: on a frame with no spec word (fresh), or on a frame holding one; null when there is none.</summary>
    static ulong? Gpa(ImmutableSortedDictionary<int, HostMemslot> slots, ImmutableSortedDictionary<ulong, ulong> host, Random random, bool fresh)
    {
        var writable = slots.Values.Where(s => !s.ReadOnly).ToList();
        var written = host.Keys.Select(hpa => hpa >> 12).ToHashSet();
        var candidates = new List<ulong>();
        foreach (var s in writable)
            for (ulong gfn = s.BaseGfn; gfn < s.EndGfn && candidates.Count < 4096; gfn++)
                if (written.Contains(s.HostPfn(gfn)) != fresh) candidates.Add(gfn);
        if (candidates.Count == 0) return null;
        return (candidates[random.Next(candidates.Count)] << 12) | ((ulong)random.Next(512) * 8);
    }

    static ulong Hpa(ImmutableSortedDictionary<int, HostMemslot> slots, ulong gpa)
    {
        var slot = SlotMemory.SlotOf(slots, gpa >> 12)!;
        return (slot.HostPfn(gpa >> 12) << 12) | (gpa & 0xFFF);
    }

    [Fact]
    public void A_shadow_host_word_written_by_one_side_alone_is_refused_at_its_step_on_a_fresh_frame_and_a_written_one()
    {
        var random = new Random(31);
        int steps = 0, caught = 0;
        for (int seed = 0; seed < 30; seed++)
        {
            var c = ShadowGen.Build(seed, 40, new ShadowGenOptions(seed % 2 == 0 ? PagingMode.Long4 : PagingMode.Pae));
            var spec = ShadowState.Create(c.Config);
            using var impl = new ImplShadowEngine(c.Config, new NativePagePool());
            int k = 0;
            foreach (var op in c.AllOps)
            {
                spec = spec.Step(op).State;
                impl.Step(op);
                Assert.True(impl.Matches(spec), $"seed {seed}: {op}");
                steps++;
                if (k++ % 3 != 1) continue;
                foreach (var (side, fresh) in new[] { ("impl", true), ("spec", true), ("impl", false), ("spec", false) })
                {
                    if (Gpa(spec.Slots, spec.HostMemory, random, fresh) is not { } gpa) continue;
                    ulong hpa = Hpa(spec.Slots, gpa);
                    ulong value = spec.HostMemory.GetValueOrDefault(hpa) ^ 0x100000;
                    var store = new ShadowOp.GuestStore(gpa, value, 8);
                    ShadowState agreed;
                    if (side == "impl")
                    {
                        // Both run the store (its shadow-page effects alike); the spec's memory stays as it was.
                        agreed = spec.Step(store).State;
                        impl.Step(store);
                        spec = agreed with { HostMemory = spec.HostMemory };
                    }
                    else
                    {
                        agreed = spec;
                        spec = spec with { HostMemory = SlotMemory.Store(spec.HostMemory, hpa, value, 8) };
                    }
                    Assert.False(impl.Matches(spec), $"a {side}-only write at hpa {hpa:X} went unseen");
                    Assert.Contains(ShadowDiff.Differences(spec, impl.View()), l => l.StartsWith($"host memory [{Bits.Hex(hpa)}]", StringComparison.Ordinal));
                    // Both sides agree again: the comparison after a difference reads all of memory and finds it equal.
                    spec = agreed;
                    Assert.True(impl.Matches(spec));
                    caught++;
                }
            }
        }
        Assert.True(steps > 500, $"{steps} steps");
        Assert.True(caught > 200, $"{caught} one-sided writes");
    }

    [Fact]
    public void A_TDP_host_word_written_by_one_side_alone_is_refused_at_its_step_on_a_fresh_frame_and_a_written_one()
    {
        var random = new Random(32);
        int steps = 0, caught = 0;
        foreach (var config in new[] { new VmConfig(TdpFormat.Ept, null), new VmConfig(TdpFormat.Stage2, null) })
            for (int seed = 0; seed < 20; seed++)
            {
                var c = TdpGen.Build(seed, size: 40, config);
                var spec = TdpState.Create(config);
                using var impl = new ImplTdpEngine(config, new NativePagePool());
                int k = 0;
                foreach (var op in c.Ops)
                {
                    spec = spec.Step(op).State;
                    impl.Step(op);
                    Assert.True(impl.Matches(spec), $"seed {seed}: {op}");
                    steps++;
                    if (k++ % 3 != 1) continue;
                    foreach (var (side, fresh) in new[] { ("impl", true), ("spec", true), ("impl", false), ("spec", false) })
                    {
                        if (Gpa(spec.Slots, spec.HostMemory, random, fresh) is not { } gpa) continue;
                        ulong hpa = Hpa(spec.Slots, gpa);
                        ulong value = spec.HostMemory.GetValueOrDefault(hpa) ^ 0x100000;
                        var store = new TdpOp.GuestStore(gpa, value, 8);
                        TdpState agreed;
                        if (side == "impl")
                        {
                            // Both run the store (it maps the gpa alike); the spec's memory stays as it was.
                            agreed = spec.Step(store).State;
                            if (ReferenceEquals(agreed.HostMemory, spec.HostMemory)) continue;   // not stored (e.g. beyond the guest's width)
                            impl.Step(store);
                            spec = agreed with { HostMemory = spec.HostMemory };
                        }
                        else
                        {
                            agreed = spec;
                            spec = spec with { HostMemory = SlotMemory.Store(spec.HostMemory, hpa, value, 8) };
                        }
                        Assert.False(impl.Matches(spec), $"a {side}-only write at hpa {hpa:X} went unseen");
                        Assert.Contains(TdpDiff.Differences(spec, impl.View()), l => l.StartsWith($"host memory [{Bits.Hex(hpa)}]", StringComparison.Ordinal));
                        spec = agreed;
                        Assert.True(impl.Matches(spec));
                        caught++;
                    }
                }
            }
        Assert.True(steps > 500, $"{steps} steps");
        Assert.True(caught > 100, $"{caught} one-sided writes");
    }

    /// <summary>The sequence <paramref name="items"/> gives when enumeration reaches it (the slots left after a case's ops).</summary>
    static IEnumerable<T> Later<T>(Func<IEnumerable<T>> items)
    {
        foreach (var item in items()) yield return item;
    }

    static Dictionary<ulong, ulong> Words(Action<Action<ulong, ulong>> visit)
    {
        var words = new Dictionary<ulong, ulong>();
        visit((hpa, value) => words[hpa] = value);
        return words;
    }

    /// <summary>Every word that <paramref name="step"/> changed has its host frame in the log it leaves; returns how many changed, and how many of those on deleting a slot.</summary>
    static (int Changed, int Deleted) LoggedChanges(Action<Action<ulong, ulong>> visit, Func<ICollection<ulong>, bool> take, Action step, bool deletes, string what)
    {
        var frames = new HashSet<ulong>();
        var before = Words(visit);
        Assert.True(take(frames));
        frames.Clear();
        step();
        Assert.True(take(frames));
        var after = Words(visit);
        int changed = 0;
        foreach (ulong hpa in before.Keys.Union(after.Keys))
        {
            if (before.GetValueOrDefault(hpa) == after.GetValueOrDefault(hpa)) continue;
            Assert.True(frames.Contains(hpa >> 12), $"{what}: the word at hpa {hpa:X} changed, its frame is not in the log");
            changed++;
        }
        return (changed, deletes ? changed : 0);
    }

    [Fact]
    public void Host_memory_logs_the_frame_of_every_word_a_step_changes_a_deleted_slots_included()
    {
        int changed = 0, deleted = 0;
        for (int seed = 0; seed < 30; seed++)
        {
            var c = ShadowGen.Build(seed, 40, new ShadowGenOptions(seed % 2 == 0 ? PagingMode.Long4 : PagingMode.Bits32));
            using var impl = new ImplShadowEngine(c.Config, new NativePagePool());
            ImplShadow.IShadowVm vm = impl.Vm;
            // Then every slot deleted: the written pages of each read zero from then on.
            foreach (var op in c.AllOps.Concat(Later(() => vm.Slots.Select(s => new ShadowOp.DeleteSlot(s.Id)).ToList())))
            {
                var (n, d) = LoggedChanges(vm.VisitHostMemory, vm.TakeWrittenHostFrames, () => impl.Step(op), op is ShadowOp.DeleteSlot, $"shadow seed {seed}: {op}");
                (changed, deleted) = (changed + n, deleted + d);
            }
        }
        foreach (var config in new[] { new VmConfig(TdpFormat.Ept, null), new VmConfig(TdpFormat.Stage2, 47) })
            for (int seed = 0; seed < 30; seed++)
            {
                var c = TdpGen.Build(seed, size: 40, config);
                using var impl = new ImplTdpEngine(config, new NativePagePool());
                ImplTdp.ITdpVm vm = impl.Vm;
                foreach (var op in c.Ops.Concat(Later(() => vm.Slots.Select(s => new TdpOp.DeleteSlot(s.Id)).ToList())))
                {
                    var (n, d) = LoggedChanges(vm.VisitHostMemory, vm.TakeWrittenHostFrames, () => impl.Step(op), op is TdpOp.DeleteSlot, $"TDP seed {seed}: {op}");
                    (changed, deleted) = (changed + n, deleted + d);
                }
            }
        Assert.True(changed > 500, $"{changed} words changed");
        Assert.True(deleted > 100, $"{deleted} words gone with a deleted slot");
    }

    [Fact]
    public void A_frame_reads_back_as_the_visit_reports_it_and_zero_outside_every_slot()
    {
        var c = ShadowGen.Build(3, 60, new ShadowGenOptions(PagingMode.Long4));
        using var impl = new ImplShadowEngine(c.Config, new NativePagePool());
        foreach (var op in c.AllOps) impl.Step(op);
        var words = Words(impl.Vm.VisitHostMemory);
        Assert.NotEmpty(words);
        var page = new ulong[512];
        foreach (var frame in words.Keys.Select(hpa => hpa >> 12).Distinct())
        {
            Assert.True(impl.Vm.ReadHostFrame(frame, page));
            for (int i = 0; i < 512; i++)
                Assert.Equal(words.GetValueOrDefault((frame << 12) + (ulong)i * 8), page[i]);
        }
        Array.Fill(page, 7UL);
        Assert.False(impl.Vm.ReadHostFrame(1UL << 39, page));
        Assert.All(page, w => Assert.Equal(0UL, w));
    }

    [Fact]
    public void A_frame_read_into_anything_but_512_words_is_refused_by_both_mmus()
    {
        using var pool = new NativePagePool();
        using var shadow = new ImplShadowEngine(ShadowGen.Build(3, 10, new ShadowGenOptions(PagingMode.Long4)).Config, pool);
        var config = new VmConfig(TdpFormat.Ept, null);
        using var tdp = new ImplTdpEngine(config, pool);
        foreach (int length in new[] { 0, 511, 513 })
        {
            Assert.Throws<ArgumentException>(() => shadow.Vm.ReadHostFrame(0, new ulong[length]));
            Assert.Throws<ArgumentException>(() => tdp.Vm.ReadHostFrame(0, new ulong[length]));
        }
        Assert.Throws<ArgumentNullException>(() => shadow.Vm.ReadHostFrame(0, null!));
        Assert.Throws<ArgumentNullException>(() => tdp.Vm.ReadHostFrame(0, null!));
    }
}
