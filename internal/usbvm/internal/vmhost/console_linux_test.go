//go:build linux

package vmhost

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

// The console watcher tells a guest whose kernel stalled (and panicked on
// it) from one that panicked otherwise and from a quiet one, so that Exec
// runs the program again only after a stall. The lines are a real guest's
// (Debian 6.1 under TCG), written in pieces as the serial port delivers them.
func TestConsoleStall(t *testing.T) {
	boot := "[    0.117186] rcu: Preemptible hierarchical RCU implementation.\n" +
		"[    0.461806] rcu: Hierarchical SRCU implementation.\n" +
		proto.MarkerStarted + "\n"
	stall := "[  211.690507] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n" +
		"[  211.690507] rcu: \t1-...0: (1 GPs behind) idle=6bf4/0/0x1 softirq=12981/12982 fqs=10501\n"
	panicLine := "[  211.990000] Kernel panic - not syncing: RCU Stall\n"
	oops := "[   12.000000] Kernel panic - not syncing: Fatal exception\n"
	for _, tc := range []struct {
		name         string
		console      string
		panic, stall bool
	}{
		{"quiet", boot, false, false},
		{"stall and panic", boot + stall + panicLine, true, true},
		{"stall, no panic yet", boot + stall, false, true},
		{"other panic", boot + oops, true, false},
		{"self-detected", boot + "[  99.1] rcu: INFO: rcu_preempt self-detected stall on CPU\n" + panicLine, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &consoleLog{started: make(chan struct{})}
			for s := tc.console; s != ""; {
				n := min(len(s), 7)
				_, _ = c.Write([]byte(s[:n]))
				s = s[n:]
			}
			assert.Equal(t, tc.panic, c.panic, "panic")
			assert.Equal(t, tc.stall, c.stall, "stall")
			r := &Result{Panic: c.panic, Stall: c.stall}
			assert.Equal(t, tc.panic && tc.stall, r.StalledKernel(), "StalledKernel")
			r.Reported = true
			assert.False(t, r.StalledKernel(), "a run whose program reported its status did not stall")
			assert.True(t, strings.Contains(c.buf.String(), "rcu:"), "the console is kept")
		})
	}
}
