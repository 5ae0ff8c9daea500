package bench

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// threadsInPpoll counts this process's threads asleep in ppoll(2), from
// /proc/self/task/<tid>/syscall (the system call number of a sleeping thread,
// "running" otherwise). ok is false if /proc does not tell.
func threadsInPpoll(t *testing.T) (n int, ok bool) {
	ents, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	want := strconv.Itoa(unix.SYS_PPOLL) + " "
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/syscall")
		if err != nil {
			if os.IsPermission(err) {
				return 0, false
			}
			continue // the thread exited
		}
		if strings.HasPrefix(string(b), want) {
			n++
		}
	}
	return n, true
}

// TestArmBlocksInPpoll checks the goroutine baseline's Arm: the readers end
// up asleep in ppoll, one thread each, and usually already are when Arm
// returns (the settle time); the share is logged, not asserted, since a
// loaded machine can delay a thread past any settle time.
func TestArmBlocksInPpoll(t *testing.T) {
	checkFDs(t)
	const pending, cycles = 64, 10
	p, err := NewPipes(pending)
	require.NoError(t, err)
	defer p.Close()
	r, err := goroutinesImpl{}.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf})
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Close()) }()
	immediate := 0
	for range cycles {
		require.NoError(t, r.Arm())
		n, ok := threadsInPpoll(t)
		if !ok {
			t.Skip("/proc/self/task/*/syscall not readable here")
		}
		if n >= pending {
			immediate++
		}
		deadline := time.Now().Add(5 * time.Second)
		for n < pending && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			n, _ = threadsInPpoll(t)
		}
		assert.GreaterOrEqual(t, n, pending, "threads asleep in ppoll after Arm")
		_, err := r.CancelAndWait()
		require.NoError(t, err)
	}
	t.Logf("all %d readers asleep in ppoll when Arm returned in %d of %d cycles", pending, immediate, cycles)
}
