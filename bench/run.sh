#!/usr/bin/env bash
# run.sh runs cancelio's benchmark suites and prints the impls side by side.
#
#   bench/run.sh [full|quick] [go test flags...]
#
#   full   (default) -count 6 -benchtime 500ms for every suite but Scale,
#          then Scale at -count 2 -benchtime 150ms: about 10 minutes
#   quick  -count 6 -benchtime 100ms, Scale -count 1 -benchtime 100ms
#
# BenchmarkScale has 80 sub-benchmarks (one round at -benchtime 150ms takes
# about 50 s), so it runs in a shorter pass of its own; SCALE=0 leaves it
# out. On a loaded machine, compare layouts with its cpu-ns/op, or run
# rounds interleaved (-count 1, several times) rather than back to back.
#
# The socket ping-pongs (transport=unix|tcp), the registered-buffer reads
# (Read4KFixed) and the bare-ABI floor from Go (impl=raw-go, raw-go-plain)
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
full) count=6 benchtime=500ms scount=2 sbenchtime=150ms ;;
quick) count=6 benchtime=100ms scount=1 sbenchtime=100ms ;;
esac

tags=()
if pkg-config --exists liburing 2>/dev/null; then
	tags=(-tags liburing)
else
	echo "run.sh: liburing not found (apt-get install liburing-dev): no impl=liburing column" >&2
fi

mkdir -p bench/results
out=${BENCH_OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S).txt}
# Every suite but Scale (a BENCH regexp replaces the default).
"$GO" test "${tags[@]}" -run '^$' -bench "${BENCH:-^Benchmark([^S]|S[^c])}" -count "$count" -benchtime "$benchtime" \
	-timeout 60m "$@" ./bench/ | tee "$out"
if [ -z "${BENCH:-}" ] && [ "${SCALE:-1}" != 0 ]; then
	"$GO" test "${tags[@]}" -run '^$' -bench '^BenchmarkScale$' -count "$scount" -benchtime "$sbenchtime" \
		-timeout 60m "$@" ./bench/ | grep '^Benchmark' | tee -a "$out"
fi
echo
echo "raw results in $out"
"$GO" tool -modfile=tools/go.mod benchstat -col /impl "$out"
