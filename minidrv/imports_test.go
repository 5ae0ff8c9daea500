package minidrv_test

import (
	"go/build"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Production code never imports a simulator or a test helper: those live in
// leaf packages that only tests import. Of the module's internal packages
// it may import goid only (production code that usb uses too).
func TestNoSimulatorImports(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	require.NoError(t, err)
	require.NotEmpty(t, pkg.Imports)
	for _, imp := range pkg.Imports {
		if imp == "github.com/cancelio/cancelio/internal/goid" {
			continue
		}
		for _, bad := range []string{"usbsim", "minidrvtest", "usbvm", "/internal/"} {
			assert.False(t, strings.Contains(imp, bad), "minidrv imports %s", imp)
		}
	}
}
