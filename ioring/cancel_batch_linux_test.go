package ioring

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// One Ring.Cancel (and one Token.Cancel) of requests of every kind at once,
// in many orders: plain reads on streams of their own, a read held behind
// another on its stream, a read with a deadline, a token's member, a
// foreign request, a multishot poll, and what must be skipped (a request
// given twice, one already canceled, one completed and delivered, the zero
// Request, another ring's). The io_uring backend cancels a run of plain
// requests in one loop and hands every other kind to the general path, in
// whatever order they come: each in-flight request is counted once and
// completes exactly once, with the cause of its first cancel, and the
// foreign one's hook runs once.
func TestConformanceCancelBatchMixed(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		other, err := New(Config{Entries: 4, Backend: r.Backend().Backend})
		require.NoError(t, err)
		t.Cleanup(func() { other.Close() })
		ord, _ := pipe(t)
		orq, err := other.Submit(Read(ord, make([]byte, 8), -1))
		require.NoError(t, err)
		t.Cleanup(func() { other.Cancel(orq) })

		const plains = 6
		var rds [plains + 4]int
		for i := range rds {
			rds[i], _ = pipe(t)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for round := range 24 {
			byToken := round%4 == 3
			// Completed and delivered: stale.
			done, err := r.Submit(Nop())
			require.NoError(t, err)
			require.Equal(t, done, reapOne(t, r).Req)
			tok := r.NewToken()
			var hooked atomic.Int32
			buf := func() []byte { return make([]byte, 8) }
			var live []Request // in flight, to be counted
			want := map[Request]error{}
			add := func(q Request, err error) {
				live = append(live, q)
				want[q] = err
			}
			member := func(op Op) Op {
				if byToken {
					return op.WithToken(tok)
				}
				return op
			}
			for i := range plains {
				q, err := r.Submit(member(Read(rds[i], buf(), -1)))
				require.NoError(t, err)
				add(q, ErrCanceled)
			}
			// A read held behind the first one on its stream.
			held, err := r.Submit(member(Read(rds[0], buf(), -1)))
			require.NoError(t, err)
			add(held, ErrCanceled)
			// A read with a deadline far off, and a token's member.
			dl, err := r.Submit(member(Read(rds[plains], buf(), -1).WithDeadline(time.Hour)))
			require.NoError(t, err)
			add(dl, ErrCanceled)
			if !byToken {
				other := r.NewToken()
				tm, err := r.Submit(Read(rds[plains+1], buf(), -1).WithToken(other))
				require.NoError(t, err)
				add(tm, ErrCanceled)
			}
			// A foreign request, and a multishot poll of an empty pipe.
			fq, err := r.Submit(member(Foreign(func() { hooked.Add(1) })))
			require.NoError(t, err)
			live = append(live, fq)
			t.Cleanup(func() { r.Complete(fq, 0, ErrCanceled) }) // when the test stops early: Close waits for it
			mq, err := r.Submit(member(PollMultishot(rds[plains+2], unix.POLLIN)))
			require.NoError(t, err)
			add(mq, ErrCanceled)
			// Canceled already: counted by neither cancel below.
			pre, err := r.Submit(member(Read(rds[plains+3], buf(), -1)))
			require.NoError(t, err)
			require.NoError(t, pre.Cancel())
			want[pre] = ErrCanceled
			if byToken {
				require.NoError(t, tok.Cancel())
			} else {
				batch := append([]Request{pre, done, {}, orq, live[0]}, live...)
				rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
				n, err := r.Cancel(batch...)
				require.NoError(t, err)
				assert.Equal(t, len(live), n, "round %d: every request in flight, once", round)
			}
			n, err := r.Cancel(live...)
			require.NoError(t, err)
			assert.Zero(t, n, "round %d: nothing is left to cancel", round)
			assert.Equal(t, int32(1), hooked.Load(), "round %d: the foreign request's hook ran once", round)
			require.NoError(t, r.Complete(fq, 0, ErrCanceled))
			want[fq] = ErrCanceled

			got := map[Request]int{}
			for len(got) < len(want) {
				c := reapOne(t, r)
				if c.More {
					continue // the poll's events, if any came
				}
				got[c.Req]++
				require.Contains(t, want, c.Req, "round %d: a completion of a request not submitted", round)
				assert.ErrorIs(t, c.Err, want[c.Req], "round %d: %v", round, c.Req)
				assert.NotErrorIs(t, c.Err, ErrTimeout, "round %d: canceled before its deadline", round)
			}
			for q, k := range got {
				assert.Equal(t, 1, k, "round %d: %v completed %d times", round, q, k)
			}
			assertNoMore(t, r)
		}
		assertSettled(t, r)
	})
}
