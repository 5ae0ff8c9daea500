# cancelio: build, test and benchmark targets.
#
#   make test         gofmt, go vet, staticcheck, go test -race ./...
#   make bench        the benchmark suites, read with benchstat (about 5 minutes)
#   make bench-quick  the same, shorter (about 1 minute)

GO          ?= go
STATICCHECK ?= $(GO) tool staticcheck
# Debian packages the project builds and tests against (cgo: libusb for the
# gousb backend, liburing for the C baseline of the benchmarks).
DEB_PKGS    ?= gcc pkg-config libusb-1.0-0-dev liburing-dev

.PHONY: all deps test fmt vet staticcheck gotest

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

test: deps fmt vet staticcheck gotest

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(STATICCHECK) ./...

gotest:
	$(GO) test -race -timeout 15m ./...
