#!/usr/bin/env bash
# callgrind.sh counts the user-space instructions per op of the loops
# behind the throughput rows, under valgrind's callgrind: the profile that
# says where the time goes when the wall-clock figures are noisy, and how
# much of an engine's cost is its own beyond the bare ABI's (impl=raw-go,
# raw-go-plain) and liburing's.
#
#   bench/callgrind.sh [ops]     (default 100000)
#
# Each row runs alone, twice, at -benchtime <base>x and <base+ops>x (base is
# 20000); the difference of the process's total instruction counts, divided
# by ops, is the user-space cost of one op, setup and warm-up cancelled out.
# The kernel's work (the system calls themselves) is not counted. The runs
# use GOMAXPROCS=1, so that no idle thread spins on a second P and adds
# instructions that depend on valgrind's speed rather than on the op, and
# GODEBUG=asyncpreemptoff=1, whose preemption signals trip valgrind. ROWS
# (printf patterns of benchmark names, %s for the impl) and IMPLS choose
# other rows and impls; liburing is there when liburing-dev is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
ops=${1:-100000}
base=20000
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 1; }

tags=()
impls=(raw-go raw-go-plain cancelio-uring cancelio-poll)
if pkg-config --exists liburing 2>/dev/null; then
	tags=(-tags liburing)
	impls=(liburing "${impls[@]}")
fi
read -r -a impls <<<"${IMPLS:-${impls[*]}}"
read -r -a rows <<<"${ROWS:-Nop/impl=%s/batch=1 Nop/impl=%s/batch=32 Read4K/impl=%s/qd=1 Read4K/impl=%s/qd=32}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$GO" test "${tags[@]}" -c -o "$tmp/bench.test" ./bench/

# total runs one benchmark (a -test.bench regexp) n times under callgrind
# and prints the instructions the process executed.
total() {
	(cd "$tmp" && GOMAXPROCS=1 GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
		./bench.test -test.run '^$' -test.bench "$1" -test.benchtime "${2}x" >"$tmp/log" 2>&1) ||
		{ echo "callgrind.sh: $1 failed:" >&2; tail -5 "$tmp/log" >&2; return 1; }
	grep -q '^ok\|^PASS' "$tmp/log" || { echo "callgrind.sh: $1 did not pass:" >&2; tail -5 "$tmp/log" >&2; return 1; }
	grep -q '^Benchmark' "$tmp/log" || { echo "callgrind.sh: $1 ran no benchmark" >&2; return 1; }
	awk '/Collected :/ { print $NF }' "$tmp/log"
}

printf '%-40s %12s\n' row "instr/op"
for row in "${rows[@]}"; do
	for impl in "${impls[@]}"; do
		name=$(printf "$row" "$impl")
		IFS=/ read -r -a parts <<<"$name"
		re="^Benchmark${parts[0]}\$"
		for p in "${parts[@]:1}"; do re="$re/^$p\$"; done
		a=$(total "$re" "$base") b=$(total "$re" $((base + ops)))
		printf '%-40s %12.0f\n' "$name" "$(echo "($b - $a) / $ops" | bc -l)"
	done
done
