using MmuSpec.Harness.Diff;
using MmuSpec.Harness.Walk;
using MmuSpec.Impl.Memory;
using MmuSpec.Spec.GuestWalk;
using MmuSpec.Spec.Paging;
using Xunit;

namespace MmuSpec.Tests.Differential;

/// <summary>
/// The walk family compares, after each step, only the pages either side changed since memory last agreed
/// (<see cref="WalkMemoryComparison"/>). An earlier version compared only the pages the spec changed and was
/// reverted: a write by the impl alone to a page the spec left alone went unseen at its step. These tests
/// write on one side only, on pages nobody wrote and on pages already written, and want the difference
/// reported at that step with the full comparison's lines.
/// </summary>
public sealed class WalkMemoryComparisonTests
{
    static IEnumerable<(WalkCase Case, SpecEngine Spec, ImplWalkEngine Impl)> Booted(int cases)
    {
        for (int seed = 0; seed < cases; seed++)
        {
            var c = WalkGen.Build(seed, size: 30, mode: null);
            var machine = c.BootSpec();
            var impl = ImplWalkEngine.Boot(c, new NativePagePool());
            if (machine is null || impl is null) { impl?.Dispose(); continue; }
            yield return (c, new SpecEngine(machine), impl);
        }
    }

    static string[] Full(SpecEngine spec, ImplWalkEngine impl) => MachineView.Differences(spec.View(), impl.View()).ToArray();

    /// <summary>A gpa on a page neither side holds a non-zero word on (and not the page of <paramref name="avoid"/>).</summary>
    static ulong UnwrittenPage(SpecEngine spec, ImplWalkEngine impl, Random random, ulong avoid = ulong.MaxValue)
    {
        var used = spec.Machine.Memory.Written.Keys.Concat(impl.Words().Select(w => w.Key)).Select(g => g >> 12).Append(avoid >> 12).ToHashSet();
        var free = WalkGen.Slots.SelectMany(s => Enumerable.Range(0, (int)s.Pages).Select(i => s.BaseGfn + (ulong)i)).Where(g => !used.Contains(g)).ToList();
        return (free[random.Next(free.Count)] << 12) + (ulong)random.Next(512) * 8;
    }

    [Fact]
    public void A_write_by_one_side_alone_is_reported_at_its_step_on_a_fresh_page_and_on_a_written_one()
    {
        var random = new Random(20);
        int steps = 0, caught = 0;
        foreach (var (c, spec, impl) in Booted(40))
        {
            using var _ = impl;
            using var comparison = new WalkMemoryComparison(impl);
            Assert.Empty(comparison.Differences(spec.Machine, full: true));
            for (int k = 0; k < c.Ops.Length; k++)
            {
                spec.Step(c.Ops[k]);
                impl.Step(c.Ops[k]);
                Assert.Empty(comparison.Differences(spec.Machine));
                steps++;
                if (k % 3 != 1) continue;
                // One side writes a word the other does not: on a page nobody wrote, then on a page with words.
                var written = spec.Machine.Memory.Written;
                foreach (var (side, gpa) in new[]
                {
                    ("impl", UnwrittenPage(spec, impl, random)), ("spec", UnwrittenPage(spec, impl, random)),
                    ("impl", written.IsEmpty ? 0x8UL : written.Keys.ElementAt(random.Next(written.Count))),
                    ("spec", written.IsEmpty ? 0x10UL : written.Keys.ElementAt(random.Next(written.Count))),
                })
                {
                    ulong before = spec.Machine.Memory.Written.GetValueOrDefault(gpa);
                    var write = new Op.WriteGuest(gpa, before ^ 0x100000, 8);
                    var undo = new Op.WriteGuest(gpa, before, 8);
                    if (side == "impl") impl.Step(write); else spec.Step(write);
                    var lines = comparison.Differences(spec.Machine);
                    Assert.True(lines.Length > 0, $"a {side}-only write at {gpa:X} went unseen");
                    Assert.Equal(Full(spec, impl), lines.ToArray());
                    Assert.Contains(lines, l => l.Contains($"memory [{Bits.Hex(gpa)}]"));
                    // Put back: the next comparison (in full, after a difference) agrees again.
                    if (side == "impl") impl.Step(undo); else spec.Step(undo);
                    Assert.Empty(comparison.Differences(spec.Machine));
                    caught++;
                }
            }
        }
        Assert.True(steps > 200, $"{steps} steps");
        Assert.True(caught > 100, $"{caught} one-sided writes");
    }

    // The case the reverted version missed: the impl writes a page the spec leaves alone, and a later write puts
    // it back before the case ends. The step of the first write must diverge, not a later one nor none.
    [Fact]
    public void An_impl_write_undone_two_steps_later_diverges_at_its_own_step()
    {
        var random = new Random(21);
        int checkedCases = 0;
        foreach (var (c, spec, impl) in Booted(30))
        {
            using var _ = impl;
            using var comparison = new WalkMemoryComparison(impl);
            Assert.Empty(comparison.Differences(spec.Machine, full: true));
            int stray = c.Ops.Length / 2, diverged = -1;
            ulong gpa = 0;
            for (int k = 0; k < c.Ops.Length && diverged < 0; k++)
            {
                spec.Step(c.Ops[k]);
                impl.Step(c.Ops[k]);
                if (k == stray) { gpa = UnwrittenPage(spec, impl, random); impl.Step(new Op.WriteGuest(gpa, 0x1234, 8)); }
                if (k == stray + 2) impl.Step(new Op.WriteGuest(gpa, 0, 8));
                if (!comparison.Differences(spec.Machine).IsEmpty) diverged = k;
            }
            if (c.Ops.Length < 4) continue;
            Assert.Equal(stray, diverged);
            checkedCases++;
        }
        Assert.True(checkedCases > 20, $"{checkedCases} cases");
    }

    // The impl's walk sets accessed and dirty bits through entry pointers, not through guest memory's stores:
    // guest memory must log those frames too, or a wrong A/D update would go unseen until the last step.
    [Fact]
    public void Guest_memory_logs_the_frames_of_the_walks_accessed_and_dirty_updates()
    {
        int updates = 0;
        var frames = new HashSet<ulong>();
        foreach (var (c, spec, impl) in Booted(40))
        {
            using var _ = impl;
            impl.TrackWrites();
            foreach (var op in c.Ops)
            {
                var before = impl.Words().ToDictionary(w => w.Key, w => w.Value);
                frames.Clear();
                impl.TakeWrittenFrames(frames);
                impl.Step(op);
                frames.Clear();
                impl.TakeWrittenFrames(frames);
                var after = impl.Words().ToDictionary(w => w.Key, w => w.Value);
                foreach (ulong gpa in before.Keys.Union(after.Keys))
                {
                    if (before.GetValueOrDefault(gpa) == after.GetValueOrDefault(gpa)) continue;
                    Assert.True(frames.Contains(gpa >> 12), $"{op}: the word at {gpa:X} changed, its frame is not in the log");
                    if (op is Op.GuestAccess) updates++;
                }
            }
        }
        Assert.True(updates > 50, $"{updates} words changed by walks");
    }
}
