//go:build linux

package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAcceptLosesToMultishotThenCancel: an Accept and an AcceptMultishot
// wait on one blocking listener; one client connects, and whichever of
// them takes the connection, the other finds none. A cancel of the Accept
// then ends it at once (within seconds, no next connection coming), on
// both backends: on the poll backend the Accept that lost runs
// non-blocking on its worker and waits for readiness again, where a
// cancel reaches it, instead of sitting in accept4.
func TestAcceptLosesToMultishotThenCancel(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		l, sa := tcpListener(t, 16, 0) // blocking
		rounds := 40
		if testing.Short() {
			rounds = 10
		}
		var lost, won int
		for round := range rounds {
			ms, err := r.Submit(AcceptMultishot(l, unix.SOCK_CLOEXEC))
			require.NoError(t, err)
			q, err := r.Start(Accept(l, unix.SOCK_CLOEXEC))
			require.NoError(t, err)
			c := tcpSocket(t)
			require.NoError(t, unix.Connect(c, sa))
			time.Sleep(2 * time.Millisecond) // both woke; one took it
			if err := q.Cancel(); err != nil {
				require.ErrorIs(t, err, ErrNotFound, "round %d: the Accept took the connection and completed", round)
			}
			type res struct {
				c   Completion
				err error
			}
			done := make(chan res, 1)
			go func() {
				cq, err := q.Wait(context.Background())
				done <- res{cq, err}
			}()
			select {
			case got := <-done:
				require.NoError(t, got.err)
				if got.c.Err == nil {
					won++
					unix.Close(got.c.N)
				} else {
					lost++
					require.ErrorIs(t, got.c.Err, ErrCanceled, "round %d", round)
				}
			case <-time.After(5 * time.Second):
				// Another connection ends the stuck accept, so that the
				// ring can close after the failure.
				c2 := tcpSocket(t)
				_ = unix.Connect(c2, sa)
				if got := <-done; got.err == nil && got.c.Err == nil {
					unix.Close(got.c.N)
				}
				t.Fatalf("round %d: the canceled Accept did not complete within 5s (no connection left for it)", round)
			}
			if err := ms.Cancel(); err != nil {
				require.ErrorIs(t, err, ErrNotFound)
			}
			for {
				cm := reapOne(t, r)
				if cm.Err == nil && cm.N > 0 {
					unix.Close(cm.N)
				}
				if !cm.More {
					break
				}
			}
			unix.Close(c)
		}
		t.Logf("the Accept took the connection %d times, the multishot %d", won, lost)
	})
}
