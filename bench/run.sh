#!/usr/bin/env bash
# run.sh runs cancelio's benchmark suites and prints the impls side by side.
#
#   bench/run.sh [full|quick] [go test flags...]
#
#   full   (default) -count 6 -benchtime 500ms: about 5 minutes before
#          BenchmarkScale and BenchmarkCancelEach were added
#   quick  -count 6 -benchtime 100ms: about a minute, likewise
#
# BenchmarkScale has 80 sub-benchmarks and now takes most of the time (one
# round of it at -benchtime 150ms took about 50 s here);
# BENCH='Nop|Read4K|PingPong|Cancel' leaves it out. On a loaded machine,
# compare layouts with its cpu-ns/op, or run rounds interleaved (-count 1,
# several times) rather than -count 6 back to back.
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
full) count=6 benchtime=500ms ;;
quick) count=6 benchtime=100ms ;;
esac

tags=()
if pkg-config --exists liburing 2>/dev/null; then
	tags=(-tags liburing)
else
	echo "run.sh: liburing not found (apt-get install liburing-dev): no impl=liburing column" >&2
fi

mkdir -p bench/results
out=${BENCH_OUT:-bench/results/$(date -u +%Y%m%d-%H%M%S).txt}
"$GO" test "${tags[@]}" -run '^$' -bench "${BENCH:-.}" -count "$count" -benchtime "$benchtime" \
	-timeout 60m "$@" ./bench/ | tee "$out"
echo
echo "raw results in $out"
"$GO" tool -modfile=tools/go.mod benchstat -col /impl "$out"
