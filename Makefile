# cancelio: build, test and benchmark targets.
#
#   make test         gofmt, go vet, staticcheck, go mod tidy -diff, the embedder
#                     check, the documentation's links, cross-builds,
#                     go test -race ./..., go test ./... as 32-bit (386)
#                     binaries, and the USB suites in a QEMU guest
#                     (make test-usbvm)
#   make bench        the benchmark suites, read with benchstat (about 10 minutes)
#   make bench-quick  the same, shorter (about 1 minute)
#   make test-usbvm   the usb tests inside a QEMU guest with a real USB stack

# bash with pipefail: a recipe that pipes go test into a filter fails when
# the tests fail.
SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c

GO          ?= go
# The project's own tools (staticcheck, benchstat) are pinned in tools/go.mod,
# a module of their own, so that they never enter the module graph of a
# program that imports cancelio.
GOTOOL      ?= $(GO) tool -modfile=tools/go.mod
STATICCHECK ?= $(GOTOOL) staticcheck
# Debian packages the project builds and tests against (cgo: libusb for the
# gousb backend, liburing for the C baseline of the benchmarks).
DEB_PKGS    ?= gcc pkg-config libusb-1.0-0-dev liburing-dev sane-utils sane-airscan

USBVM_EXEC  ?= $(shell $(GO) env GOPATH)/bin/usbvm-exec

.PHONY: all deps test fmt vet staticcheck tidy embedcheck links gotest gotest32 bench bench-quick usbvm-setup test-usbvm cross cross-all

all: test

# deps installs the Debian packages that are missing (needs root and apt-get).
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null; then echo "missing Debian packages:$$missing (no apt-get here: install them by hand)" >&2; exit 1; fi; \
		echo "installing:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; }; \
	fi

# test is the whole gate: the host suites, then the USB suites inside a QEMU
# guest with a real Linux USB stack (set up on first use, cached after).
test: deps fmt vet staticcheck tidy embedcheck links cross gotest gotest32 test-usbvm

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

# tidy fails when go mod tidy would change go.mod or go.sum (of the library
# or of tools/): requirements are what the code imports, nothing more.
tidy:
	$(GO) mod tidy -diff
	cd tools && $(GO) mod tidy -diff

# embedcheck builds a throw-away module that imports ioring, usb and minidrv
# from this checkout and fails if the project's tools reach its module graph.
embedcheck:
	GO=$(GO) internal/check/embedcheck.sh

# links checks that every relative link in README.md, docs/ and the other
# Markdown files, and every Markdown file a Go comment names, resolves inside
# the repository (internal/check; go test ./... runs it too).
links:
	$(GO) test -count=1 ./internal/check/

# gotest runs every host suite; the TestScanimage suites (the real scanimage
# driving the eSCL front end) run on their own with -v, so that the log lists
# each of them passing (or skipped, where scanimage is missing).
gotest:
	$(GO) test -race -timeout 15m -skip '^TestScanimage' ./...
	$(GO) test -race -timeout 10m -count=1 -v -run '^TestScanimage' ./minidrv/escl/ ./cmd/scand/ | grep -E '^(=== RUN|--- |ok|FAIL|PASS|panic)'

# gotest32 runs every host suite again as linux/386 binaries (no cgo, no
# race detector: it has none there), on the same kernel: what the kernel
# reads differs on 32-bit (io_uring's 64-bit __kernel_timespec against the
# C library's 32-bit timespec, say), and vet cannot see that. A kernel
# without IA32 emulation runs no such binary: then it says so and stops.
gotest32:
	@if CGO_ENABLED=0 GOARCH=386 $(GO) test -count=1 -run '^$$' ./internal/units/ >/dev/null 2>&1; then \
		echo "CGO_ENABLED=0 GOARCH=386 $(GO) test -timeout 10m ./..."; \
		CGO_ENABLED=0 GOARCH=386 $(GO) test -timeout 10m ./...; \
	else \
		echo "gotest32: this kernel runs no 386 binaries (no IA32 emulation): the 32-bit suites did not run"; \
	fi

# cross keeps the platform splits honest: every package, tests included
# (go vet type-checks them), builds for 64-bit and 32-bit Linux and for
# systems without a backend (where ioring.New fails with ErrNotSupported),
# all without cgo (no gousb, no liburing baseline).
CROSS ?= linux/amd64 linux/arm64 linux/386 linux/arm linux/riscv64 darwin/arm64 windows/amd64 freebsd/amd64

cross:
	@set -e; for t in $(CROSS); do \
		echo "cross: $$t"; \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./...; \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) build ./...; \
	done

# cross-all type-checks every package and its tests for every platform
# `go tool dist list` names (slow: each target compiles the standard
# library; not part of make test). Plan 9 is left out: its syscall package
# has no Errno, which ioring's IOError and usbsim's error mapping use. So
# are iOS and Android, where the go command insists on cgo's external
# linker even for vet (Android too with Go 1.26); darwin and linux check
# the same files.
cross-all:
	@set -e; for t in $$($(GO) tool dist list | grep -v '^plan9/\|^ios/\|^android/'); do \
		echo "cross-all: $$t"; \
		CGO_ENABLED=0 GOOS=$${t%/*} GOARCH=$${t#*/} $(GO) vet ./...; \
	done

# bench runs every suite (-tags liburing when liburing-dev is installed),
# 6 interleaved rounds at -benchtime 500ms, keeps the raw output in
# bench/results/<date>-<time>.txt and prints `benchstat -col /impl`.
bench: deps
	GO=$(GO) bench/run.sh full

# bench-quick is the same with -benchtime 100ms (about a minute).
bench-quick: deps
	GO=$(GO) bench/run.sh quick

# usbvm-setup installs QEMU (apt) and caches Debian's kernel and USB modules
# outside the repository, then builds the go test -exec runner.
usbvm-setup:
	$(GO) run ./internal/usbvm/cmd/usbvm-setup -q
	CGO_ENABLED=0 $(GO) build -o $(USBVM_EXEC) ./internal/usbvm/cmd/usbvm-exec

# test-usbvm runs the usb packages' tests inside the guest (dummy_hcd, a
# FunctionFS gadget, usbfs and libusb on a real Linux USB stack).
test-usbvm: usbvm-setup
	$(GO) test -v -race -count=1 -exec $(USBVM_EXEC) $$($(GO) list ./usb/... ./internal/usbvm)
	$(GO) test -v -race -count=1 -exec $(USBVM_EXEC) -run Gadget ./minidrv/
	$(GO) test -v -race -count=1 -exec $(USBVM_EXEC) -run Gadget ./cmd/scand/
