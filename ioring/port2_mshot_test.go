//go:build linux

package ioring

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Second round, multishot polls: ported from liburing's poll-mshot-update,
// poll-mshot-overflow, poll-many and double-poll-crash. Multishot polls
// armed again and again on one fd, and several at once on the same file,
// each ended by a different cause at a random moment while the file
// fires: every request delivers its More results, then exactly one final
// completion, last.

// port2MshotTally reaps until every request in want has delivered its
// final completion, checking that nothing of a request comes after its
// final one; it returns each request's final completion.
func port2MshotTally(t *testing.T, r *Ring, want map[Request]bool) map[Request]Completion {
	t.Helper()
	finals := map[Request]Completion{}
	for len(finals) < len(want) {
		c := reapOne(t, r)
		require.True(t, want[c.Req], "completion of an unknown request %+v", c)
		_, done := finals[c.Req]
		require.False(t, done, "a completion after the final one: %+v", c)
		if !c.More {
			finals[c.Req] = c
			assert.False(t, c.Req.Pending(), "pending after its final completion")
			assert.ErrorIs(t, c.Req.Cancel(), ErrNotFound, "cancel after the final completion")
		} else {
			assert.NoError(t, c.Err, "a More result")
		}
	}
	return finals
}

// TestPort2MshotRearmLoop: a multishot poll on an eventfd ended and armed
// again many times, by each cause in turn (Request.Cancel, Ring.Cancel,
// its token, its deadline, CancelAll), while another goroutine signals the
// eventfd; each one ends once, with the cause's error.
func TestPort2MshotRearmLoop(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var one [8]byte
				one[0] = 1
				unix.Write(efd, one[:])
				time.Sleep(30 * time.Microsecond)
				drainEventFD(efd)
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		rng := rand.New(rand.NewPCG(21, 22))
		for i := range 60 {
			tok := r.NewToken()
			op := PollMultishot(efd, unix.POLLIN).WithToken(tok)
			cause := i % 5
			if cause == 3 {
				op = op.WithDeadline(time.Duration(50+rng.IntN(500)) * time.Microsecond)
			}
			q, err := r.Submit(op)
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skip("no multishot poll")
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			switch cause {
			case 0:
				assert.NoError(t, q.Cancel())
			case 1:
				n, err := r.Cancel(q, q)
				assert.NoError(t, err)
				assert.Equal(t, 1, n)
			case 2:
				assert.NoError(t, tok.Cancel())
			case 4:
				assert.NoError(t, r.CancelAll())
			}
			final := port2MshotTally(t, r, map[Request]bool{q: true})[q]
			if cause == 3 {
				assert.ErrorIs(t, final.Err, ErrTimeout, "round %d", i)
			} else {
				assert.ErrorIs(t, final.Err, ErrCanceled, "round %d", i)
				assert.NotErrorIs(t, final.Err, ErrTimeout, "round %d", i)
			}
			assert.Zero(t, tok.Pending())
		}
		assertNoMore(t, r)
	})
}

// TestPort2MshotManyOnOneFile: several multishot polls and one-shot polls
// on one pipe, with reads of the pipe's data racing them and a random
// cause ending each multishot one: every request ends once, one-shot
// ones with their events or a cancel, and Close with some still armed
// delivers their final completions to Reap afterwards.
func TestPort2MshotManyOnOneFile(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		rng := rand.New(rand.NewPCG(23, 24))
		for round := range 5 {
			want := map[Request]bool{}
			var multis []Request
			tok := r.NewToken()
			for k := range 6 {
				var op Op
				if k%3 == 2 {
					op = Poll(rd, unix.POLLIN)
				} else {
					op = PollMultishot(rd, unix.POLLIN)
				}
				q, err := r.Submit(op.WithToken(tok))
				if err != nil {
					require.ErrorIs(t, err, ErrNotSupported)
					t.Skip("no multishot poll")
				}
				want[q] = true
				if k%3 != 2 {
					multis = append(multis, q)
				}
			}
			for range 5 {
				unix.Write(wr, []byte("x"))
				time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				var buf [8]byte
				unix.Read(rd, buf[:])
			}
			switch round % 3 {
			case 0:
				tok.Cancel()
			case 1:
				// The one-shot polls are left to end by their events,
				// so the pipe keeps one byte until they have: a
				// readiness written and read back at once may go unseen
				// on the poll backend (epoll looks at the file again
				// when it reports it; see BackendPoll), where io_uring
				// reports the events its wakeup carried.
				unix.Write(wr, []byte("x"))
				r.Cancel(multis...)
			default:
				r.CancelAll()
			}
			finals := port2MshotTally(t, r, want)
			if round%3 == 1 {
				var buf [8]byte
				unix.Read(rd, buf[:])
			}
			for q, c := range finals {
				if c.Err != nil {
					assert.ErrorIs(t, c.Err, ErrCanceled, "round %d: %v", round, q)
				} else {
					assert.NotZero(t, c.N&unix.POLLIN, "round %d: a one-shot poll's events", round)
				}
			}
		}
		// Close with multishot polls armed.
		want := map[Request]bool{}
		for range 3 {
			q, err := r.Submit(PollMultishot(rd, unix.POLLIN))
			require.NoError(t, err)
			want[q] = true
		}
		unix.Write(wr, []byte("y"))
		portWithin(t, 10*time.Second, "Close", func() { require.NoError(t, r.Close()) })
		finals := port2MshotTally(t, r, want)
		for _, c := range finals {
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}
		var c [4]Completion
		n, err := r.Reap(c[:], time.Second)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, ErrClosed)
	})
}
