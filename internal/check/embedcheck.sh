#!/usr/bin/env bash
# embedcheck.sh checks what cancelio adds to the module graph of a program
# that embeds it: a throw-away module requires cancelio (replaced by this
# checkout), imports ioring, usb and minidrv, and must not see the
# project's own tools (staticcheck, benchstat), which live in tools/go.mod.
#
#   internal/check/embedcheck.sh        (make embedcheck; part of make test)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
GO=${GO:-go}
mod=$("$GO" -C "$root" list -m)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/go.mod" <<MOD
module example.com/embedder

go 1.26.0

require $mod v0.0.0

replace $mod => $root
MOD
cat >"$tmp/main.go" <<SRC
// Command embedder only imports cancelio's library packages.
package main

import (
	_ "$mod/ioring"
	_ "$mod/minidrv"
	_ "$mod/usb"
)

func main() {}
SRC

cd "$tmp"
export GOWORK=off # the throw-away module alone, whatever go.work surrounds it
"$GO" mod tidy >/dev/null
"$GO" build -o /dev/null .
mods=$("$GO" list -m all)
bad=$(grep -E '^(honnef\.co/go/tools|golang\.org/x/perf)( |$)' <<<"$mods" || true)
if [ -n "$bad" ]; then
	echo "embedcheck: an embedder of $mod gets the project's tools in its module graph:" >&2
	echo "$bad" >&2
	exit 1
fi
echo "embedcheck: ok ($(wc -l <<<"$mods") modules in an embedder's graph, no tools)"
