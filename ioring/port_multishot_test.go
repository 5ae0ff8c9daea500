//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's accept-multishot (accept.c's multishot cases),
// poll-mshot-update, poll-mshot-overflow and recv-multishot's "end of
// stream racing a cancel": a multishot request ends with exactly one
// final completion, after all its others, whatever ends it.

// TestPortAcceptMultishot: one connection per completion (each fd the
// caller's), then a cancel: one final completion, ErrCanceled.
func TestPortAcceptMultishot(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		l, sa := tcpListener(t, 8, 0)
		q, err := r.Submit(AcceptMultishot(l, 0).WithUser("acc"))
		require.NoError(t, err)
		for i := range 3 {
			dialTCP(t, sa)
			c := reapMore(t, r, q)
			require.NoError(t, c.Err, "connection %d", i)
			require.Positive(t, c.N)
			_, err := unix.Getpeername(c.N)
			assert.NoError(t, err, "an accepted connection")
			unix.Close(c.N)
		}
		require.NoError(t, q.Cancel())
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if !c.More {
				if c.Err == nil {
					// A connection that raced the cancel (doc: close it).
					assert.Positive(t, c.N)
					unix.Close(c.N)
				} else {
					assert.ErrorIs(t, c.Err, ErrCanceled)
				}
				break
			}
			unix.Close(c.N)
		}
		assert.False(t, q.Pending())
		assert.ErrorIs(t, q.Cancel(), ErrNotFound)
		assertNoMore(t, r)
	})
}

// TestPortMultishotEndRacesCancel: a receive whose stream ends while it
// is canceled ends once: with the end (0) or the cancel, after every
// message, and a cancel after the end is recorded says ErrNotFound.
func TestPortMultishotEndRacesCancel(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(16, 16)
		require.NoError(t, err)
		defer br.Close()
		for round := range 40 {
			a, b := socketpair(t, unix.SOCK_STREAM)
			q, err := r.Submit(RecvMultishot(a, br, 0).WithUser(round))
			require.NoError(t, err)
			_, err = unix.Write(b, []byte("data"))
			require.NoError(t, err)
			go unix.Shutdown(b, unix.SHUT_WR)
			if round%4 != 0 {
				time.Sleep(time.Duration(round%5) * 10 * time.Microsecond)
			}
			cerr := q.Cancel()
			var got []byte
			for {
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Buffer {
					got = append(got, br.Bytes(c)...)
					require.NoError(t, br.Release(c.BufID))
				}
				if !c.More {
					if cerr == nil && c.Err != nil {
						assert.ErrorIs(t, c.Err, ErrCanceled, "round %d", round)
					} else if cerr != nil {
						assert.ErrorIs(t, cerr, ErrNotFound)
						assert.NoError(t, c.Err, "round %d: the end was recorded before the cancel", round)
					}
					break
				}
			}
			assert.LessOrEqual(t, len(got), 4)
			assert.False(t, q.Pending())
		}
		assertNoMore(t, r)
	})
}

// TestPortMultishotDeadlineAndToken: a multishot poll with a deadline
// delivers its events, then ends with ErrTimeout; one on a token ends
// with the token's cancel; a token canceled before submission gives the
// final completion at once, and a token with a multishot member cannot
// be Reset until its final completion.
func TestPortMultishotDeadlineAndToken(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		q, err := r.Submit(PollMultishot(efd, unix.POLLIN).WithDeadline(30 * time.Millisecond))
		require.NoError(t, err)
		signal(t, efd)
		c := reapMore(t, r, q)
		assert.NoError(t, c.Err)
		drainEventFD(efd)
		c = reapFinal(t, r, q)
		assert.ErrorIs(t, c.Err, ErrTimeout)

		tok := r.NewToken()
		q, err = r.Submit(PollMultishot(efd, unix.POLLIN).WithToken(tok))
		require.NoError(t, err)
		assert.Equal(t, 1, tok.Pending())
		require.NoError(t, tok.Cancel())
		if err := tok.Reset(); err != nil {
			assert.ErrorIs(t, err, ErrInvalid, "a member has not completed")
		} else {
			// The poll backend may have completed it inside Cancel: the
			// token was free to reset. Cancel it again for what follows.
			require.NoError(t, tok.Cancel())
		}
		c = reapFinal(t, r, q)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Zero(t, tok.Pending())
		q, err = r.Submit(PollMultishot(efd, unix.POLLIN).WithToken(tok))
		require.NoError(t, err)
		c = reapFinal(t, r, q)
		assert.ErrorIs(t, c.Err, ErrCanceled, "a canceled token covers the future")
		require.NoError(t, tok.Reset())
		assert.False(t, tok.Canceled())
		assertNoMore(t, r)
	})
}
