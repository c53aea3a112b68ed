using System.Collections.Immutable;
using System.Text;
using System.Text.Json;
using MmuSpec.Harness.Images;
using MmuSpec.Harness.Running;
using MmuSpec.Spec.Memory;
using MmuSpec.Spec.Tdp;

namespace MmuSpec.Harness.Concurrency;

/// <summary>
/// A case of the concurrent TDP property (`tdp-concurrent`): a VM set up by <see cref="Setup"/> on both
/// sides, a program of a few logical threads (one vCPU each) whose ops run on the concurrent MMU, and the
/// exploration's bounds: <see cref="Iterations"/> schedules with Coyote's PCT strategy, then as many with
/// its random strategy, both from <see cref="ScheduleSeed"/>. <see cref="Schedule"/>, when set, is one
/// schedule Coyote recorded (its reproducible trace): the case then runs exactly that schedule, once, which
/// is what a counterexample file keeps so `replay` answers the same (docs/counterexample-format.md).
/// <see cref="SetupOnEveryVcpu"/>: the setup's accesses run on every vCPU (vCPU 0 first), so each thread's TLB
/// starts with what the setup read (the spec does not care which vCPU read it).
/// </summary>
public sealed record ConcurrentTdpCase(
    VmConfig Config, ImmutableArray<TdpOp> Setup, ConcurrentProgram<TdpOp> Program, uint ScheduleSeed, uint Iterations, string? Schedule = null,
    bool SetupOnEveryVcpu = false)
{
    /// <summary>Ops over every thread (the history the checker judges has one entry per op).</summary>
    public int OpCount => Program.OpCount;

    public ConcurrentTdpCase WithProgram(ConcurrentProgram<TdpOp> program) => this with { Program = program, Schedule = null };

    /// <summary>The program without op <paramref name="index"/>, counted thread by thread (a thread left empty goes).</summary>
    public ConcurrentTdpCase RemoveOp(int index)
    {
        var threads = new List<IReadOnlyList<TdpOp>>();
        int k = 0;
        foreach (var t in Program.Threads)
        {
            var ops = t.Where((_, j) => k + j != index).ToList();
            k += t.Count;
            if (ops.Count > 0) threads.Add(ops);
        }
        return WithProgram(new ConcurrentProgram<TdpOp>(threads));
    }

    /// <summary>The case as a report prints it: setup, one line per thread, the bounds; <paramref name="highlightStep"/> marks op k (counted thread by thread).</summary>
    public string Render(int? highlightStep = null)
    {
        var sb = new StringBuilder($"VM {Config}; setup{(SetupOnEveryVcpu ? " (accesses on every vCPU)" : "")}: {string.Join(", ", Setup)}\n");
        int k = 0;
        for (int t = 0; t < Program.Threads.Count; t++)
        {
            sb.Append($"  T{t} (vCPU {t}): ");
            sb.AppendJoin(", ", Program.Threads[t].Select((op, j) => k + j == highlightStep ? $">> {op} <<" : op.ToString()));
            k += Program.Threads[t].Count;
            sb.Append('\n');
        }
        sb.Append(Schedule is null
            ? $"  schedules: {Iterations} PCT + {Iterations} random, seed {ScheduleSeed}"
            : "  schedule: the one recorded (a Coyote trace)");
        return sb.ToString();
    }

    public override string ToString() => Render();

    /// <summary>Value equality, the program's threads and ops included (a case read back from JSON equals the one written).</summary>
    public bool Equals(ConcurrentTdpCase? other) =>
        other is not null && Config.Equals(other.Config) && Setup.SequenceEqual(other.Setup) && ScheduleSeed == other.ScheduleSeed
        && Iterations == other.Iterations && Schedule == other.Schedule && SetupOnEveryVcpu == other.SetupOnEveryVcpu && Program.Threads.Count == other.Program.Threads.Count
        && Program.Threads.Zip(other.Program.Threads).All(p => p.First.SequenceEqual(p.Second));

    public override int GetHashCode() => HashCode.Combine(Config, Setup.Length, Program.OpCount, ScheduleSeed, Iterations);

    // ---- JSON (docs/counterexample-format.md) ----

    public const string Kind = "tdp-concurrent";

    public static void WriteJson(Utf8JsonWriter w, ConcurrentTdpCase c)
    {
        w.WriteStartObject();
        w.WriteString("kind", Kind);
        w.WriteStartObject("config");
        w.WriteString("format", CaseJson.FormatNames.Single(f => f.Value == c.Config.Format).Key);
        if (c.Config.SharedBit is { } bit) w.WriteNumber("shared_bit", bit); else w.WriteNull("shared_bit");
        if (c.Config.AccessedDirty != AccessedDirty.Untracked)
            w.WriteString("accessed_dirty", CaseJson.AccessedDirtyNames.Single(a => a.Value == c.Config.AccessedDirty).Key);
        w.WriteEndObject();
        w.WriteStartArray("setup");
        foreach (var op in c.Setup) CaseJson.WriteOp(w, op);
        w.WriteEndArray();
        if (c.SetupOnEveryVcpu) w.WriteBoolean("setup_on_every_vcpu", true); // absent: vCPU 0 only, as files before it
        w.WriteStartArray("threads");
        foreach (var t in c.Program.Threads)
        {
            w.WriteStartArray();
            foreach (var op in t) CaseJson.WriteOp(w, op);
            w.WriteEndArray();
        }
        w.WriteEndArray();
        w.WriteNumber("schedule_seed", c.ScheduleSeed);
        w.WriteNumber("iterations", c.Iterations);
        w.WritePropertyName("schedule");
        if (c.Schedule is { } schedule)
        {
            using var doc = JsonDocument.Parse(schedule);
            doc.RootElement.WriteTo(w);
        }
        else w.WriteNullValue();
        w.WriteEndObject();
    }

    public static ConcurrentTdpCase ReadJson(JsonElement e, string path)
    {
        var o = StrictObject.Open(e, path, "a concurrent TDP case", "kind", "config", "setup", "setup_on_every_vcpu", "threads", "schedule_seed", "iterations", "schedule");
        var cfg = o.Object("config", "a VM configuration like {\"format\": \"ept\", \"shared_bit\": null}", "format", "shared_bit", "accessed_dirty");
        var format = cfg.Choice("format", CaseJson.FormatNames);
        int? bit = cfg.NullableInt("shared_bit");
        var ad = cfg.Has("accessed_dirty") ? cfg.Choice("accessed_dirty", CaseJson.AccessedDirtyNames) : AccessedDirty.Untracked; // absent: no aging
        VmConfig config;
        try { config = new VmConfig(format, bit, ad); }
        catch (ArgumentException x) { throw new InputException($"{cfg.At("shared_bit")}: {x.Message}"); }
        var setup = o.Array("setup").Select(s => CaseJson.ReadTdpOp(s.Element, s.Path)).ToImmutableArray();
        var threads = o.Array("threads").Select(t => t.Element.ValueKind == JsonValueKind.Array
            ? (IReadOnlyList<TdpOp>)t.Element.EnumerateArray().Select((op, j) => CaseJson.ReadTdpOp(op, $"{t.Path}[{j}]")).ToList()
            : throw new InputException($"{t.Path}: expected an array of ops (one thread), got {StrictObject.Kind(t.Element)}")).ToList();
        long seed = o.Long("schedule_seed"), iterations = o.Long("iterations");
        if (seed is < 0 or > uint.MaxValue) throw new InputException($"{o.At("schedule_seed")}: {seed} is not from 0 to {uint.MaxValue}");
        if (iterations is < 0 or > uint.MaxValue) throw new InputException($"{o.At("iterations")}: {iterations} is not from 0 to {uint.MaxValue}");
        string? schedule = o.IsNull("schedule") ? null
            : o.Field("schedule").ValueKind == JsonValueKind.Object ? o.Field("schedule").GetRawText()
            : throw new InputException($"{o.At("schedule")}: expected a Coyote trace object or null, got {StrictObject.Kind(o.Field("schedule"))}");
        bool everyVcpu = o.Has("setup_on_every_vcpu") && o.Bool("setup_on_every_vcpu");
        var c = new ConcurrentTdpCase(config, setup, new ConcurrentProgram<TdpOp>(threads), (uint)seed, (uint)iterations, schedule, everyVcpu);
        CheckRules(c, path);
        return c;
    }

    // ---- rules ----

    /// <summary>Most threads (vCPUs) and ops a case may have: the checker takes at most 64 ops, and Coyote explores small programs well.</summary>
    public const int MaxThreads = 4, MaxOpsPerThread = 8, MaxIterations = 10_000;

    /// <summary>What the generator keeps to, beyond what the ops' constructors check (a case outside it is a caller error).</summary>
    public static void CheckRules(ConcurrentTdpCase c, string path)
    {
        string At(string field) => path.Length == 0 ? field : $"{path}.{field}";
        if (c.Program.Threads.Count is < 1 or > MaxThreads)
            throw new InputException($"{At("threads")}: {c.Program.Threads.Count} threads; a case has 1 to {MaxThreads}");
        for (int t = 0; t < c.Program.Threads.Count; t++)
        {
            var ops = c.Program.Threads[t];
            if (ops.Count is < 1 or > MaxOpsPerThread)
                throw new InputException($"{At($"threads[{t}]")}: {ops.Count} ops; a thread has 1 to {MaxOpsPerThread}");
            for (int j = 0; j < ops.Count; j++)
                if (!ConcurrentTdpCheck.RunsConcurrently(ops[j]))
                    throw new InputException($"{At($"threads[{t}][{j}]")}: {ops[j]} is not an op the concurrent MMU runs (access_gpa, zap_range, zap_all, set_max_page_size, set_dirty_logging, create_slot, host_invalidate_start, host_invalidate_end, get_dirty_log, age, test_age, track_writes, untrack_writes)");
        }
        for (int j = 0; j < c.Setup.Length; j++)
            if (c.Setup[j] is not (TdpOp.CreateSlot or TdpOp.SetMaxPageSize or TdpOp.SetDirtyLogging or TdpOp.AccessGpa))
                throw new InputException($"{At($"setup[{j}]")}: the setup holds only create_slot, set_max_page_size, set_dirty_logging and access_gpa");
            else if (c.Setup[j] is TdpOp.CreateSlot s && s.Pages > CaseRules.MaxSlotPages)
                throw new InputException($"{At($"setup[{j}]")}: a slot of {s.Pages:X} pages; at most 0x{CaseRules.MaxSlotPages:X}");
        foreach (var op in c.Program.Threads.SelectMany(t => t))
            if (op is TdpOp.CreateSlot s && s.Pages > CaseRules.MaxSlotPages)
                throw new InputException($"{At("threads")}: a slot of {s.Pages:X} pages; at most 0x{CaseRules.MaxSlotPages:X}");
        if (c.Setup.Length > MaxOpsPerThread * MaxThreads)
            throw new InputException($"{At("setup")}: {c.Setup.Length} ops; at most {MaxOpsPerThread * MaxThreads}");
        if (c.Iterations is < 1 or > MaxIterations)
            throw new InputException($"{At("iterations")}: {c.Iterations}; a case explores 1 to {MaxIterations} schedules per strategy");
        // The spec must accept the setup, as the generator's always is.
        var state = TdpState.Create(c.Config);
        for (int j = 0; j < c.Setup.Length; j++)
        {
            var stepped = state.Step(c.Setup[j]);
            if (stepped.Result is not (VmResult.Ok or TdpResult.Mapped))
                throw new InputException($"{At($"setup[{j}]")}: the spec does not accept {c.Setup[j]} ({stepped.Result})");
            state = stepped.State;
        }
    }
}
