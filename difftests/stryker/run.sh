#!/usr/bin/env bash
# Mutation testing of impl/ with Stryker.NET (docs/mutation-score.md).
#
#   difftests/stryker/run.sh [GLOB ...]     e.g. difftests/stryker/run.sh '**/Tdp/**/*.cs'
#
# Without a glob every file of impl/ is mutated (hours on 2 cores); with globs only those files.
# The report lands in difftests/stryker/StrykerOutput/<timestamp>/reports/mutation-report.json;
# summarize.py merges several such reports into the score table.
#
# The differential properties draw fixed cases (MMUSPEC_SEED), so a mutant is killed or not the
# same way every run; each property runs MMUSPEC_MAX_TEST cases (default here 100, a third of
# dotnet test's depth) and a failure is not shrunk (a kill needs no minimal case).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
dotnet tool restore >/dev/null
export MMUSPEC_SEED="${MMUSPEC_SEED:-20261121}"
export MMUSPEC_MAX_TEST="${MMUSPEC_MAX_TEST:-100}"
export MMUSPEC_SHRINK=off
export MMUSPEC_COUNTEREXAMPLES=off
args=()
for glob in "$@"; do args+=(--mutate "$glob"); done
cd "$here"
echo "stryker: seed $MMUSPEC_SEED, $MMUSPEC_MAX_TEST cases per property, mutating ${*:-all of impl/}" >&2
exec dotnet stryker --config-file stryker-config.json "${args[@]}"
