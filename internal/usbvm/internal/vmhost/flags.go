package vmhost

import (
	"path/filepath"
	"strings"
	"time"
)

// testTimeout returns the value of -test.timeout (0: none) and whether the
// flag is present.
func testTimeout(args []string) (time.Duration, bool) {
	for i, a := range args {
		v, ok := flagValue(args, i, a, "test.timeout")
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, false
		}
		return d, true
	}
	return 0, false
}

// outputDirs returns the directories of the test binary's output flags, which
// must exist in the guest (their contents stay there).
func outputDirs(args []string) []string {
	var dirs []string
	for i, a := range args {
		for _, name := range []string{"test.testlogfile", "test.outputdir", "test.gocoverdir"} {
			v, ok := flagValue(args, i, a, name)
			if !ok || v == "" || !filepath.IsAbs(v) {
				continue
			}
			if name == "test.testlogfile" {
				v = filepath.Dir(v)
			}
			dirs = append(dirs, v)
		}
	}
	return dirs
}

// flagValue returns the value of flag name at args[i] ("-name=v", "--name=v",
// "-name v").
func flagValue(args []string, i int, a, name string) (string, bool) {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if v, ok := strings.CutPrefix(a, name+"="); ok {
		return v, true
	}
	if a == name && i+1 < len(args) {
		return args[i+1], true
	}
	return "", false
}
