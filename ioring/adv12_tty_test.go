//go:build linux

package ioring

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv12TTYWriteNeverBlocksSubmitter submits a write to a pty slave
// larger than the room the pty has, nobody reading the master. The
// contract: a submission never waits for the I/O (Submit returns at once,
// the write completes when the master is read), and a cancel ends it.
func TestAdv12TTYWriteNeverBlocksSubmitter(t *testing.T) {
	for _, b := range backends {
		for _, room := range []int{-1, 0, 300} {
			t.Run(fmt.Sprintf("backend=%v/room=%d", b, room), func(t *testing.T) {
				adv12TTYWrite(t, b, room)
			})
		}
	}
}

// adv12TTYWrite fills the pty first when room >= 0, leaving about room
// bytes free (read back from the master), then submits the write.
func adv12TTYWrite(t *testing.T, b Backend, room int) {
	{
		{
			r := adv12Ring(t, b, 16)
			master, slave := adv12Pty(t)
			defer unix.Close(master)
			defer unix.Close(slave)
			if room >= 0 {
				total := ttyFill(t, slave) // tty_blocking_test.go
				if room > 0 {
					n, err := unix.Read(master, make([]byte, room))
					require.NoError(t, err)
					t.Logf("filled %d bytes, read back %d", total, n)
				}
			}
			buf := make([]byte, 256<<10)
			type res struct {
				q   Request
				err error
			}
			done := make(chan res, 1)
			go func() {
				q, err := r.Submit(Write(slave, buf, -1))
				done <- res{q, err}
			}()
			var got res
			select {
			case got = <-done:
			case <-time.After(2 * time.Second):
				t.Errorf("Submit of a pty write did not return within 2s: the submitter waits for the pty to drain")
				// Unblock it: drain the master until Submit returns.
				drained := make(chan struct{})
				go func() {
					defer close(drained)
					p := make([]byte, 64<<10)
					for {
						select {
						case got = <-done:
							return
						default:
						}
						unix.SetNonblock(master, true)
						unix.Read(master, p)
						time.Sleep(time.Millisecond)
					}
				}()
				<-drained
			}
			require.NoError(t, got.err)
			start := time.Now()
			err := got.q.Cancel()
			if err != nil {
				require.ErrorIs(t, err, ErrNotFound)
			}
			c := reapOne(t, r)
			assert.Less(t, time.Since(start), 2*time.Second, "the cancel ended it at once")
			t.Logf("completion: %s", adv12Res(c))
			require.NoError(t, r.Close())
		}
	}
}
