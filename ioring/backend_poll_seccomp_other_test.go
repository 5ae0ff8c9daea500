//go:build linux && !(amd64 || arm64)

package ioring

import "fmt"

// blockIOURingSetup is not written for this architecture (the filter needs
// its AUDIT_ARCH); the seccomp fallback test skips.
func blockIOURingSetup() error {
	return fmt.Errorf("%w: seccomp filter for this architecture", ErrNotSupported)
}
