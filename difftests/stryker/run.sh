#!/usr/bin/env bash
# Mutation testing of impl/ with Stryker.NET, one area at a time (docs/mutation-score.md).
#
#   difftests/stryker/run.sh AREA [stryker options...]
#
#   AREA       mutates                      tests that may kill (namespace MmuSpec.Tests.Differential, and
#                                           in every area the impl's API tests, namespace MmuSpec.Tests.Impl)
#   paging     impl/Paging                  WalkDifferentialTests, AccessEnumerationTests, TdpDifferentialTests
#                                           (the TDP guest walks go through the traced walk and TryCreate)
#   pagetable  impl/PageTable, impl/Memory  WalkDifferentialTests, TdpDifferentialTests, TdpFlushTests, NativeMemoryTests
#   tdp        impl/Tdp                     TdpDifferentialTests, TdpFlushTests, TdpVmContractTests, NativeMemoryTests
#   shadow     impl/Shadow                  ShadowDifferentialTests, CachedRootTests, NativeMemoryTests
#   all        impl/ (ThrowHelper.cs too)   every test of the two namespaces but CoverageTests (spec only)
#
# An area's run gives its mutants only the tests of that area, which keeps Stryker's coverage
# capture (every test run once with every mutation point recording hits) and each mutant's run
# short: a paging mutant that only a shadow test would kill counts as survived, so the area
# scores are lower bounds of what the whole suite kills. The report lands in
# difftests/stryker/StrykerOutput/AREA/reports/mutation-report.json; summarize.py merges the
# areas' reports into the score table.
#
# The differential properties draw fixed cases (MMUSPEC_SEED), so a mutant is killed or not the
# same way every run; each property runs MMUSPEC_MAX_TEST cases (default here 100 where dotnet
# test runs 1000 per walk and 300 per TDP property; 30 for the shadow area, whose cases cost
# 10-30 times a walk case and whose coverage capture would otherwise take most of an hour), and a
# failure is not shrunk (a kill needs no minimal case).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
area="${1:-}"
ns="FullyQualifiedName~MmuSpec.Tests.Differential"
api="FullyQualifiedName~MmuSpec.Tests.Impl"
case "$area" in
  paging)    mutate=('**/Paging/**/*.cs'); tests="$ns.WalkDifferentialTests|$ns.AccessEnumerationTests|$ns.TdpDifferentialTests" ;;
  pagetable) mutate=('**/PageTable/**/*.cs' '**/Memory/**/*.cs')
             tests="$ns.WalkDifferentialTests|$ns.TdpDifferentialTests|$ns.TdpFlushTests|$ns.TdpVmContractTests|$ns.NativeMemoryTests" ;;
  tdp)       mutate=('**/Tdp/**/*.cs'); tests="$ns.TdpDifferentialTests|$ns.TdpFlushTests|$ns.TdpVmContractTests|$ns.NativeMemoryTests" ;;
  shadow)    mutate=('**/Shadow/**/*.cs'); tests="$ns.ShadowDifferentialTests|$ns.CachedRootTests|$ns.NativeMemoryTests" ;;
  all)       mutate=('**/*.cs'); tests="($ns&FullyQualifiedName!~CoverageTests)|$api" ;;
  *) echo "usage: $0 paging|pagetable|tdp|shadow|all [stryker options...]" >&2; exit 2 ;;
esac
shift
[ "$area" = all ] || tests="$tests|$api"
export MMUSPEC_SEED="${MMUSPEC_SEED:-20261121}"
if [ "$area" = shadow ]; then cases=30; else cases=100; fi
export MMUSPEC_MAX_TEST="${MMUSPEC_MAX_TEST:-$cases}"
export MMUSPEC_SHRINK=off
export MMUSPEC_COUNTEREXAMPLES=off
# STRYKER_MUTATE="glob glob": only those files of the area (a re-run after a fix), or only some
# mutants: `summarize.py OLD.json --rerun Timeout` prints globs with Stryker's text spans
# ("**/Shadow/PteListPool.cs{2007..2036}") selecting the mutants OLD.json timed out on. summarize.py
# merges a re-run's report over the earlier ones, mutant by mutant where a file is unchanged.
if [ -n "${STRYKER_MUTATE+set}" ]; then
  # Set but empty (e.g. a --rerun that found nothing) must not turn into a run over the whole area.
  [ -n "$STRYKER_MUTATE" ] || { echo "$0: STRYKER_MUTATE is set but empty" >&2; exit 2; }
  read -r -a mutate <<< "$STRYKER_MUTATE"
fi
out="StrykerOutput/$area${STRYKER_MUTATE:+-part}"
args=(--config-file stryker-config.json --output "$out" --test-case-filter "$tests")
for glob in "${mutate[@]}"; do args+=(--mutate "$glob"); done
cd "$here"
dotnet tool restore >/dev/null
echo "stryker $area: seed $MMUSPEC_SEED, $MMUSPEC_MAX_TEST cases per property, tests: $tests" >&2
exec dotnet stryker "${args[@]}" "$@"
