#!/usr/bin/env bash
# run.sh runs cancelio's benchmark suites and prints the impls side by side.
#
#   bench/run.sh [full|quick] [go test flags...]
#
#   full   (default) 6 rounds at -benchtime 500ms of every suite but Scale,
#          then 2 rounds of Scale at -benchtime 150ms: about 10 minutes
#   quick  6 rounds at -benchtime 100ms, 1 round of Scale at 100ms
#
# A round is one go test run at -count 1: every row once, the impls of a
# workload one after the other. Rounds, not -count 6 (which runs each row 6
# times back to back), so that the impls compared in a ratio are measured
# seconds apart, not minutes: on a shared machine the speed drifts, and a
# drift between two rows would read as a difference between two impls.
# Each row still gets 6 samples, and benchstat reads them the same way.
#
# BenchmarkScale has 80 sub-benchmarks (one round at -benchtime 150ms takes
# about 50 s), so it runs in a shorter pass of its own; SCALE=0 leaves it
# out. On a loaded machine, compare layouts with its cpu-ns/op.
#
# The socket ping-pongs (transport=unix|tcp), the registered-buffer reads
# (Read4KFixed) and the bare-ABI floor from Go (impl=raw-go, raw-go-regfd, raw-go-plain)
# run in the main pass with the rest: about 2.5 of its minutes at full.
#
# With liburing-dev installed the suites build with -tags liburing, which
# adds the impl=liburing column (the physical limit). BENCH selects suites
# (a -bench regexp, default "."); GO picks the go command. The raw output is
# kept in bench/results/<UTC date>-<time>.txt (or $BENCH_OUT), then
# summarized with benchstat -col /impl (pinned in tools/go.mod, outside the
# library's module graph).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
mode=full
case ${1:-} in
full | quick)
	mode=$1
	shift
	;;
esac
case $mode in
full) rounds=6 benchtime=500ms srounds=2 sbenchtime=150ms ;;
quick) rounds=6 benchtime=100ms srounds=1 sbenchtime=100ms ;;
esac

tags=()
if pkg-config --exists liburing 2>/dev/null; then
	tags=(-tags liburing)
else
	echo "run.sh: liburing not found (apt-get install liburing-dev): no impl=liburing column" >&2
fi

mkdir -p bench/results
out=${BENCH_OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S).txt}
: >"$out"
# Every suite but Scale (a BENCH regexp replaces the default), in rounds.
for round in $(seq "$rounds"); do
	echo "# round $round of $rounds" >&2
	"$GO" test "${tags[@]}" -run '^$' -bench "${BENCH:-^Benchmark([^S]|S[^c])}" -count 1 -benchtime "$benchtime" \
		-timeout 60m "$@" ./bench/ | tee -a "$out"
done
if [ -z "${BENCH:-}" ] && [ "${SCALE:-1}" != 0 ]; then
	for round in $(seq "$srounds"); do
		"$GO" test "${tags[@]}" -run '^$' -bench '^BenchmarkScale$' -count 1 -benchtime "$sbenchtime" \
			-timeout 60m "$@" ./bench/ | grep '^Benchmark' | tee -a "$out"
	done
fi
echo
echo "raw results in $out"
"$GO" tool -modfile=tools/go.mod benchstat -col /impl "$out"
