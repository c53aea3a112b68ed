#!/usr/bin/env python3
"""Summarizes Stryker.NET JSON reports (mutation-testing-report-schema) for docs/mutation-score.md.

usage: summarize.py REPORT.json [REPORT.json ...] [--survivors FILE.tsv] [--verdicts verdicts.tsv] [--appendix FILE.md]
       summarize.py REPORT.json [REPORT.json ...] --rerun STATUS[,STATUS...]

Several reports (e.g. a full run and a re-run of some files or some mutants) are merged in order, a
file known by its path under impl/ (reports from different checkouts name it differently): where a
later report tested mutants of a file whose source is unchanged, each of them replaces the earlier
result for the same location, mutator and replacement, and the rest keep theirs; where the file's
source changed, the later report's mutants replace the file's whole. Prints the totals, the score
with Stryker's formula and a per-file table as Markdown, with a table per area (the folders of
impl/: Paging, PageTable + Memory, Tdp, Shadow); with --survivors also writes every
Survived/NoCoverage mutant as a TSV line (file, line, mutator, original, replacement, status, id)
for the appendix.

Stryker's formula: score = detected / (detected + undetected), where detected = Killed + Timeout and
undetected = Survived + NoCoverage; CompileError and Ignored mutants are outside both.

--verdicts reads the hand-written verdicts on undetected mutants (difftests/stryker/verdicts.tsv:
file, original text, replacement text, verdict, reason; matched by text, not line, so they survive
edits elsewhere in the file; "File.cs:LINE" in the first column singles out one line where two mutants of a
file share their text). A mutant whose verdict is "equivalent" cannot change what the MMU does
(e.g. `>>` turned into `>>>` on an unsigned value); the summary then also gives the score without
them, the usual definition of a mutation score. --appendix writes every undetected mutant with its
verdict and reason as a Markdown table ("not analysed" where no verdict matches).

--rerun prints, instead of the tables, a STRYKER_MUTATE value for run.sh that selects just the
mutants with the given statuses (e.g. Timeout, or Survived,NoCoverage,Timeout): one glob per file
with Stryker's text spans ("**/Shadow/PteListPool.cs{2007..2036}{2599..2623}"; character offsets,
and Stryker mutates a node only if a span contains it whole). Mutants nested inside a selected one
are re-run too. Refuses a file changed since the report, and exits with an error when no mutant
has those statuses. A re-run's report (run.sh writes it to StrykerOutput/AREA-part) is merged after
the others whatever the order of the arguments.
"""
import json
import os
import sys
from collections import Counter

STATUSES = ["Killed", "Timeout", "Survived", "NoCoverage", "CompileError", "RuntimeError", "Ignored", "Pending"]


def mutant_key(m):
    s, e = m["location"]["start"], m["location"]["end"]
    return (s["line"], s["column"], e["line"], e["column"], m["mutatorName"], m.get("replacement", ""))


def load(paths):
    # Reports of a re-run (run.sh writes them to StrykerOutput/AREA-part) merge after the full runs,
    # whatever order the shell's glob gives; otherwise in the order given.
    paths = sorted(paths, key=lambda p: "-part" in os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(p)))))
    files = {}
    origin = {}
    for p in paths:
        with open(p, encoding="utf-8") as f:
            report = json.load(f)
        for full_name, entry in report["files"].items():
            # Keyed by the path under impl/: reports from different checkouts (worktrees) name the same file.
            name = short(full_name)
            tested = [m for m in entry["mutants"] if m["status"] != "Ignored"]
            if name not in files or (tested and entry["source"] != files[name]["source"]):
                # First sight of the file, or the file changed since the earlier report: take it whole.
                files[name] = entry
                for m in tested:
                    origin[(name, mutant_key(m))] = p
            elif tested:
                # Same source: each mutant this report tested replaces the earlier result for the same
                # location, mutator and replacement (a re-run of some mutants, e.g. with a --mutate
                # text span); mutants it ignored keep their earlier status.
                latest = {mutant_key(m): m for m in tested}
                for key in latest:
                    origin[(name, key)] = p
                merged = [latest.pop(mutant_key(m), m) for m in files[name]["mutants"]]
                files[name] = dict(entry, mutants=merged + list(latest.values()))
    if len(paths) > 1:
        taken = Counter(origin.get((name, mutant_key(m))) for name, entry in files.items()
                        for m in entry["mutants"] if m["status"] != "Ignored")
        print("tested mutants by report, after the merge: " + ", ".join(f"{p} {taken[p]}" for p in paths), file=sys.stderr)
    return files


def short(name):
    i = name.find("/impl/")
    return name[i + len("/impl/"):] if i >= 0 else name


def original_text(source_lines, loc):
    s, e = loc["start"], loc["end"]
    if s["line"] == e["line"]:
        text = source_lines[s["line"] - 1][s["column"] - 1:e["column"] - 1]
    else:
        parts = [source_lines[s["line"] - 1][s["column"] - 1:]]
        parts += source_lines[s["line"]:e["line"] - 1]
        parts.append(source_lines[e["line"] - 1][:e["column"] - 1])
        text = " ".join(x.strip() for x in parts)
    return " ".join(text.split())


AREAS = {"Paging": "paging", "PageTable": "pagetable", "Memory": "pagetable", "Tdp": "tdp", "Shadow": "shadow"}


def area(short_name):
    return AREAS.get(short_name.split("/")[0], "other")


def score(c):
    detected = c["Killed"] + c["Timeout"]
    undetected = c["Survived"] + c["NoCoverage"]
    return detected, undetected, (100.0 * detected / (detected + undetected)) if detected + undetected else float("nan")


def take_option(argv, name):
    if name not in argv:
        return None, argv
    i = argv.index(name)
    return argv[i + 1], argv[:i] + argv[i + 2:]


def load_verdicts(path):
    verdicts = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                sys.exit(f"{path}:{n}: expected 5 tab-separated fields (file, original, replacement, verdict, reason)")
            verdicts[tuple(parts[:3])] = (parts[3], parts[4])
    return verdicts


def offsets(source):
    starts = [0]
    for line in source.split("\n"):
        starts.append(starts[-1] + len(line) + 1)
    return lambda pos: starts[pos["line"] - 1] + pos["column"] - 1


def rerun_globs(files, statuses):
    impl = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "impl")
    globs = []
    for name in sorted(files):
        entry = files[name]
        at = offsets(entry["source"])
        selected = [m for m in entry["mutants"] if m["status"] in statuses]
        if not selected:
            continue
        # The spans are offsets into the report's copy of the file: refuse if the file has changed since.
        with open(os.path.join(impl, name), encoding="utf-8") as f:
            if f.read() != entry["source"]:
                sys.exit(f"--rerun: impl/{name} has changed since the report was made; re-run the whole file instead")
        # A span keeps a mutant whose node it contains whole (both ends exclusive, like the report's end
        # column); one character of slack each side can only take in mutants nested in a selected one.
        spans = sorted((at(m["location"]["start"]) - 1, at(m["location"]["end"]) + 1) for m in selected)
        merged = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        globs.append("**/" + name + "".join(f"{{{a}..{b}}}" for a, b in merged))
    if not globs:
        sys.exit(f"--rerun: no mutant has status {', '.join(sorted(statuses))}")
    return " ".join(globs)


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__, file=sys.stdout if argv else sys.stderr)
        sys.exit(0 if argv else 2)
    survivors_path, argv = take_option(argv, "--survivors")
    verdicts_path, argv = take_option(argv, "--verdicts")
    appendix_path, argv = take_option(argv, "--appendix")
    rerun, argv = take_option(argv, "--rerun")
    verdicts = load_verdicts(verdicts_path) if verdicts_path else {}
    files = load(argv)
    if rerun:
        wanted = set(rerun.split(","))
        unknown = wanted - set(STATUSES)
        if unknown:
            sys.exit(f"--rerun: unknown status {', '.join(sorted(unknown))} (one of {', '.join(STATUSES)})")
        print(rerun_globs(files, wanted))
        return
    total = Counter()
    rows = []
    survivors = []
    for name in sorted(files, key=short):
        entry = files[name]
        c = Counter(m["status"] for m in entry["mutants"])
        total.update(c)
        d, u, s = score(c)
        if d + u + c["CompileError"]:
            rows.append((short(name), c, s))
        lines = entry["source"].split("\n")
        for m in entry["mutants"]:
            if m["status"] in ("Survived", "NoCoverage"):
                survivors.append((short(name), m["location"]["start"]["line"], m["mutatorName"],
                                  original_text(lines, m["location"]), " ".join(m.get("replacement", "").split()),
                                  m["status"], m["id"]))
    by_area = {}
    for name, c, _ in rows:
        by_area.setdefault(area(name), Counter()).update(c)
    print("| area | killed | timeout | survived | no coverage | tested | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for a in ["paging", "pagetable", "tdp", "shadow", "other"]:
        if a in by_area:
            c = by_area[a]
            d, u, s = score(c)
            print(f"| {a} | {c['Killed']} | {c['Timeout']} | {c['Survived']} | {c['NoCoverage']} | {d + u} | {s:.1f}% |")
    tested = Counter()
    for c in by_area.values():
        tested.update(c)
    d, u, s = score(tested)
    print(f"| **all** | {tested['Killed']} | {tested['Timeout']} | {tested['Survived']} | {tested['NoCoverage']} | {d + u} | **{s:.1f}%** |")
    print()
    if verdicts:
        # A verdict keyed "File.cs:LINE" wins over one keyed "File.cs" (two mutants with the same text in one file).
        judged = [(row, verdicts.get((f"{row[0]}:{row[1]}", row[3], row[4])) or verdicts.get((row[0], row[3], row[4])))
                  for row in survivors]
        equivalent = Counter(area(row[0]) for row, v in judged if v and v[0] == "equivalent")
        kinds = Counter(v[0] if v else "not analysed" for _, v in judged)
        print("Verdicts on the undetected mutants: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()) + ".")
        print()
        print("| area | tested | equivalent | score without the equivalent mutants |")
        print("|---|---:|---:|---:|")
        for a in ["paging", "pagetable", "tdp", "shadow", "other", "all"]:
            c = tested if a == "all" else by_area.get(a)
            if c is None:
                continue
            e = sum(equivalent.values()) if a == "all" else equivalent[a]
            d, u, _ = score(c)
            print(f"| {a} | {d + u} | {e} | {100.0 * d / (d + u - e):.1f}% |")
        print()
        if appendix_path:
            with open(appendix_path, "w", encoding="utf-8") as f:
                f.write("| file:line | status | mutation | original → replacement | verdict | why |\n|---|---|---|---|---|---|\n")
                for (name, line, mutator, original, replacement, status, _), v in judged:
                    cell = lambda t: t.replace("|", "\\|")
                    verdict, reason = v if v else ("not analysed", "")
                    f.write(f"| {name}:{line} | {status} | {mutator.replace(' mutation', '')} | `{cell(original[:70])}` → "
                            f"`{cell(replacement[:50])}` | {verdict} | {cell(reason)} |\n")
    d, u, s = score(total)
    print("| total | killed | timeout | survived | no coverage | compile error | ignored | score |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {sum(total.values())} | {total['Killed']} | {total['Timeout']} | {total['Survived']} | "
          f"{total['NoCoverage']} | {total['CompileError']} | {total['Ignored']} | {s:.2f}% |")
    print()
    print("| file | killed | timeout | survived | no coverage | compile error | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, c, sc in rows:
        print(f"| {name} | {c['Killed']} | {c['Timeout']} | {c['Survived']} | {c['NoCoverage']} | {c['CompileError']} | "
              f"{'n/a' if sc != sc else f'{sc:.1f}%'} |")
    if survivors_path:
        with open(survivors_path, "w", encoding="utf-8") as f:
            for row in survivors:
                f.write("\t".join(str(x) for x in row) + "\n")
        print(f"\n{len(survivors)} survived/no-coverage mutants written to {survivors_path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
