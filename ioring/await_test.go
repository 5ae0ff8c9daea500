//go:build linux

package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A slot serves awaited and queued requests in turn (the free list hands
// the same slot back): each completion goes where its own request says,
// to Request.Wait or to Reap, never to the other, whichever kind the slot
// served before.
func TestAwaitedAndQueuedShareSlots(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		var cs [4]Completion
		for i := range 20 {
			if i%3 == 0 {
				_, err := r.Submit(Nop().WithUser(i))
				require.NoError(t, err)
				c := reapOne(t, r)
				require.NoError(t, c.Err)
				assert.Equal(t, i, c.User)
				continue
			}
			q, err := r.Start(Nop().WithUser(i))
			require.NoError(t, err)
			// The NOP is done at once (on io_uring, inside the enter that
			// submitted it): Reap must still not get it.
			n, err := r.Reap(cs[:], 0)
			require.NoError(t, err)
			assert.Zero(t, n, "Reap took an awaited completion")
			c, err := q.Wait(context.Background())
			require.NoError(t, err)
			require.NoError(t, c.Err)
			assert.Equal(t, i, c.User)
			assert.Equal(t, OpNop, c.Op)
		}
		// An awaited read that waits, then a queued one on the same slot.
		buf := make([]byte, 3)
		q, err := r.Start(Read(rd, buf, -1))
		require.NoError(t, err)
		time.AfterFunc(5*time.Millisecond, func() { unix.Write(wr, []byte("abc")) })
		c, err := q.Wait(context.Background())
		require.NoError(t, err)
		require.NoError(t, c.Err)
		assert.Equal(t, 3, c.N)
		assert.Equal(t, "abc", string(buf))
		_, err = r.Submit(Read(rd, buf, -1).WithUser("q"))
		require.NoError(t, err)
		_, err = unix.Write(wr, []byte("xyz"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.NoError(t, c.Err)
		assert.Equal(t, "q", c.User)
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// Do and Wait with a context that can end allocate nothing when the request
// completes at once: the context is watched (context.AfterFunc, which
// allocates) only once the wait is about to block. One that blocks is
// still canceled by its context.
func TestDoWatchesContextOnlyToBlock(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		in, out := []byte("x"), make([]byte, 1)
		do := func() {
			c, err := r.Do(ctx, Nop())
			if err != nil || c.Err != nil {
				t.Fatalf("Do(Nop): %v, %v", err, c.Err)
			}
			if n, err := r.WriteAt(ctx, wr, in, -1); n != 1 || err != nil {
				t.Fatalf("WriteAt: %d, %v", n, err)
			}
			// The byte is in the pipe: the read completes at once.
			if n, err := r.ReadAt(ctx, rd, out, -1); n != 1 || err != nil {
				t.Fatalf("ReadAt: %d, %v", n, err)
			}
		}
		do() // warm: the context's channel, the slots
		assert.Zero(t, testing.AllocsPerRun(200, do), "allocations per Do with a context that can end")

		// A read that has to wait is still canceled by its context.
		ctx2, cancel2 := context.WithCancel(context.Background())
		time.AfterFunc(5*time.Millisecond, cancel2)
		c, err := r.Do(ctx2, Read(rd, out, -1))
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.ErrorIs(t, c.Err, context.Canceled)
		// So is a started one whose waiter's context ends.
		q, err := r.Start(Read(rd, out, -1))
		require.NoError(t, err)
		ctx3, cancel3 := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel3()
		c, err = q.Wait(ctx3)
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assertSettled(t, r)
	})
}
