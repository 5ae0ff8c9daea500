//go:build linux

package ioring

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Adversarial use of the API that the engine handles as documented.

// TestAdvCancelMixedBatch: Ring.Cancel with a slice far longer than the
// SQ, mixing requests in flight (reads on pipes, held reads behind them on
// a stream, foreign requests, timeouts), each given several times, with
// zero Requests, requests already delivered, and requests in flight on
// another ring. It returns the number of distinct requests of this ring in
// flight and not canceled before; each of those completes once with
// ErrCanceled, and the other ring's requests are untouched.
func TestAdvCancelMixedBatch(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		other, err := New(Config{Entries: 16, Backend: r.Backend().Backend})
		require.NoError(t, err)
		defer other.Close()
		rd, _ := pipe(t)
		rd2, _ := pipe(t)

		// Delivered: stale handles.
		var stale []Request
		for range 3 {
			q, err := r.Submit(Nop())
			require.NoError(t, err)
			stale = append(stale, q)
			reapOne(t, r)
		}
		var live []Request
		add := func(op Op) {
			q, err := r.Submit(op.WithUser(len(live)))
			require.NoError(t, err)
			live = append(live, q)
		}
		for range 3 {
			add(Read(rd, make([]byte, 4), -1)) // the first runs, the others are held
		}
		add(Read(rd2, make([]byte, 4), -1).Unordered())
		add(Timeout(time.Hour))
		var hooks atomic.Int32
		for range 3 {
			i := len(live)
			add(Foreign(func() {
				hooks.Add(1)
				go r.Complete(live[i], 0, ErrCanceled) // a transport's cancel, later
			}))
		}
		already := live[len(live)-1]
		require.NoError(t, already.Cancel(), "canceled before: not counted again")
		require.Eventually(t, func() bool { return hooks.Load() == 1 }, 10*time.Second, time.Millisecond)

		oq, err := other.Submit(Read(rd, make([]byte, 4), -1).Unordered())
		require.NoError(t, err)

		var mixed []Request
		for k := range 40 { // 40 rounds of ~12 entries: far beyond the SQ's 16
			mixed = append(mixed, Request{}, stale[k%len(stale)], oq)
			mixed = append(mixed, live...)
		}
		n, err := r.Cancel(mixed...)
		require.NoError(t, err)
		assert.Equal(t, len(live)-1, n, "each live request once, the one canceled before not")
		assert.True(t, oq.Pending(), "another ring's request is not canceled")

		seen := map[any]int{}
		for range live {
			c := reapOne(t, r)
			seen[c.User]++
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v (%v)", c.User, c.Op)
		}
		for i := range live {
			assert.Equal(t, 1, seen[i], "request %d", i)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
		assert.Equal(t, int32(3), hooks.Load(), "each hook once")

		// A second pass finds nothing left.
		n, err = r.Cancel(mixed...)
		require.NoError(t, err)
		assert.Zero(t, n)
		require.NoError(t, oq.Cancel())
		var c [1]Completion
		got, err := other.Reap(c[:], 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, 1, got)
		assert.Equal(t, oq, c[0].Req)
		assert.ErrorIs(t, c[0].Err, ErrCanceled)
	})
}

// TestAdvHugeBatches: SubmitBatch and SubmitAndReap with three times more
// ops than the ring has slots (plain nops, ops with tokens, and a mix)
// submit as many as there are free slots and say ErrFull; the Requests
// beyond them stay zero; exactly the submitted ones complete, once; the
// ring works normally afterwards. An empty batch submits nothing and is
// no error; reqs shorter than ops is refused before anything is
// submitted.
func TestAdvHugeBatches(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		tok := r.NewToken()
		kinds := map[string]func(i int) Op{
			"nops":  func(i int) Op { return Nop().WithUser(i) },
			"token": func(i int) Op { return Nop().WithToken(tok).WithUser(i) },
			"mixed": func(i int) Op {
				if i%2 == 0 {
					return Nop().WithUser(i)
				}
				return Timeout(time.Microsecond).WithUser(i)
			},
		}
		for name, mk := range kinds {
			for _, viaReap := range []bool{false, true} {
				ops := make([]Op, 3*r.Entries())
				for i := range ops {
					ops[i] = mk(i)
				}
				reqs := make([]Request, len(ops))
				var n int
				var err error
				if viaReap {
					n, _, err = r.SubmitAndReap(ops, reqs, make([]Completion, 1), 0)
				} else {
					n, err = r.SubmitBatch(ops, reqs)
				}
				assert.ErrorIs(t, err, ErrFull, "%s", name)
				assert.Equal(t, r.Entries(), n, "%s: as many as there are slots", name)
				for i := n; i < len(reqs); i++ {
					assert.Zero(t, reqs[i], "%s: request %d beyond the submitted", name, i)
				}
				seen := map[any]int{}
				for len(seen) < n {
					var cs [32]Completion
					k, err := r.Reap(cs[:], 10*time.Second)
					require.NoError(t, err)
					require.NotZero(t, k, "%s: completions within 10s", name)
					for _, c := range cs[:k] {
						seen[c.User]++
						assert.NoError(t, c.Err)
					}
				}
				for i := range n {
					assert.Equal(t, 1, seen[i], "%s: op %d", name, i)
				}
				assertNoMore(t, r)
				assertSettled(t, r)
			}
		}
		n, err := r.SubmitBatch(nil, nil)
		assert.NoError(t, err)
		assert.Zero(t, n)
		n, err = r.SubmitBatch([]Op{Nop(), Nop()}, make([]Request, 1))
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, n)
		assert.Zero(t, r.InFlight())
		c := doOp(t, r, Nop())
		assert.NoError(t, c.Err)
	})
}

// TestAdvExtremeDurations: Reap and SubmitAndReap with the largest and
// smallest durations (math.MaxInt64 waits as long as needed, math.MinInt64
// blocks as any negative timeout does) return the completion that comes;
// a Timeout and a deadline of math.MaxInt64 are accepted and end with
// their cancel; a deadline of 1ns ends a read that waits with ErrTimeout.
func TestAdvExtremeDurations(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, d := range []time.Duration{math.MaxInt64, math.MinInt64} {
			_, err := r.Submit(Timeout(time.Millisecond).WithUser(d))
			require.NoError(t, err)
			var cs [2]Completion
			n, err := r.Reap(cs[:], d)
			require.NoError(t, err, "Reap(%v)", d)
			require.Equal(t, 1, n)
			assert.Equal(t, d, cs[0].User)
			assert.NoError(t, cs[0].Err)

			ops := []Op{Timeout(time.Millisecond).WithUser(d)}
			s, n, err := r.SubmitAndReap(ops, make([]Request, 1), cs[:], d)
			require.NoError(t, err, "SubmitAndReap(%v)", d)
			assert.Equal(t, 1, s)
			require.Equal(t, 1, n)
			assert.Equal(t, d, cs[0].User)
		}

		rd, _ := pipe(t)
		long := []Op{
			Timeout(math.MaxInt64).WithUser("timeout"),
			Nop().WithDeadline(math.MaxInt64).WithUser("nop"),
			Read(rd, make([]byte, 1), -1).WithDeadline(math.MaxInt64).WithUser("read"),
			Read(rd, make([]byte, 1), -1).WithDeadline(math.MaxInt64).WithUser("held"),
			Foreign(nil).WithDeadline(math.MaxInt64).WithUser("foreign"),
		}
		var reqs []Request
		for _, op := range long {
			q, err := r.Submit(op)
			require.NoError(t, err, "%v", op.Code())
			reqs = append(reqs, q)
		}
		c := reapOne(t, r)
		assert.Equal(t, "nop", c.User)
		assert.NoError(t, c.Err)
		_, err := r.Cancel(reqs...)
		require.NoError(t, err)
		require.NoError(t, r.Complete(reqs[4], 0, ErrCanceled))
		for range 4 {
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
			assert.NotErrorIs(t, c.Err, ErrTimeout, "%v", c.User)
		}
		assertNoMore(t, r)

		c = doOp(t, r, Read(rd, make([]byte, 1), -1).WithDeadline(1))
		assert.ErrorIs(t, c.Err, ErrTimeout, "a 1ns deadline")
		assertSettled(t, r)
	})
}

// TestAdvAfterClose: after Close every entry point says so (ErrClosed,
// wrapped or not), none panics or blocks: submissions of every kind,
// cancels, registrations, buffer rings, tokens, Files; a started request
// whose completion was not taken is still delivered to Wait, a queued one
// to Reap, and Reap then says ErrClosed, whatever its timeout and dst.
func TestAdvAfterClose(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		tok := r.NewToken()
		started, err := r.Start(Read(rd, make([]byte, 4), -1).WithUser("started"))
		require.NoError(t, err)
		queued, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok).WithUser("queued"))
		require.NoError(t, err)
		br, err := r.NewBufRing(2, 8)
		require.NoError(t, err)
		fd, err := dupFD(int32(rd))
		require.NoError(t, err)
		f := NewFile(r, int(fd), "adv")

		require.NoError(t, r.Close())

		for i, op := range []Op{Nop(), Read(rd, make([]byte, 1), 0), Foreign(nil), Timeout(1), Nop().WithToken(tok)} {
			_, err := r.Submit(op)
			assert.ErrorIs(t, err, ErrClosed, "Submit %d", i)
			_, err = r.Start(op)
			assert.ErrorIs(t, err, ErrClosed, "Start %d", i)
			_, err = r.Do(context.Background(), op)
			assert.ErrorIs(t, err, ErrClosed, "Do %d", i)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = r.Do(ctx, op)
			assert.ErrorIs(t, err, ErrClosed, "Do %d, context ended", i)
			n, err := r.SubmitBatch([]Op{op, op}, make([]Request, 2))
			assert.ErrorIs(t, err, ErrClosed, "SubmitBatch %d", i)
			assert.Zero(t, n)
			n, m, err := r.SubmitAndReap([]Op{op}, make([]Request, 1), make([]Completion, 1), time.Hour)
			assert.ErrorIs(t, err, ErrClosed, "SubmitAndReap %d", i)
			assert.Zero(t, n)
			assert.Zero(t, m)
		}
		_, err = r.Submit(RecvMultishot(rd, br, 0))
		assert.Error(t, err, "a RecvMultishot on a ring closed")
		_, err = r.SubmitBatch(nil, nil)
		assert.ErrorIs(t, err, ErrClosed, "an empty batch")
		_, err = r.Cancel(queued, started, Request{})
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, r.CancelAll(), ErrClosed)
		assert.ErrorIs(t, r.Close(), ErrClosed)
		assert.ErrorIs(t, tok.Cancel(), ErrClosed)
		assert.ErrorIs(t, queued.Cancel(), ErrNotFound)
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{make([]byte, 8)}), ErrClosed)
		assert.ErrorIs(t, r.UnregisterBuffers(), ErrClosed)
		assert.ErrorIs(t, r.RegisterFiles([]int{rd}), ErrClosed)
		assert.ErrorIs(t, r.UnregisterFiles(), ErrClosed)
		_, err = r.NewBufRing(2, 8)
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, br.Close(), ErrClosed, "Ring.Close closed it")
		assert.ErrorIs(t, br.Release(0), ErrClosed)
		assert.ErrorIs(t, r.Complete(queued, 0, nil), ErrNotFound)
		_, err = f.Read(make([]byte, 1))
		assert.ErrorIs(t, err, ErrClosed, "a File on a closed ring")
		_, err = f.Write([]byte("x"))
		assert.ErrorIs(t, err, ErrClosed)
		assert.NoError(t, f.SetDeadline(time.Now().Add(-time.Hour)))
		assert.NoError(t, f.Close(), "a File closes its fd even when its ring is closed")

		_, err = r.Reap(nil, 0)
		assert.ErrorIs(t, err, ErrInvalid, "an empty dst is bad input first")
		var cs [4]Completion
		n, err := r.Reap(cs[:], -1)
		require.NoError(t, err)
		require.Equal(t, 1, n, "the queued completion")
		assert.Equal(t, "queued", cs[0].User)
		assert.ErrorIs(t, cs[0].Err, ErrCanceled)
		for _, d := range []time.Duration{0, 1, -1, math.MaxInt64, math.MinInt64} {
			n, err := r.Reap(cs[:], d)
			assert.ErrorIs(t, err, ErrClosed, "Reap(%v) after the last", d)
			assert.Zero(t, n)
		}
		c, err := started.Wait(context.Background())
		require.NoError(t, err, "a started request's completion outlives Close")
		assert.Equal(t, "started", c.User)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		_, err = started.Wait(context.Background())
		assert.ErrorIs(t, err, ErrNotFound, "delivered once")
		st := r.Stats()
		assert.Zero(t, st.InFlight)
		assert.Equal(t, st.Submitted, st.Completed)
		assert.Equal(t, uint64(2), st.Canceled)
	})
}

// TestAdvTokenCancelResetRace: goroutines submit reads that never get
// data with one token while others cancel it and try to Reset it, round
// after round. Reset may succeed only when nothing of the token is
// pending, so after a last Cancel each round, every read accepted in the
// round completes exactly once, with ErrCanceled (nothing else can end
// it), and the token ends with nothing pending; Stats counts each cancel.
func TestAdvTokenCancelResetRace(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		rd2, _ := pipe(t)
		tok := r.NewToken()
		var total int
		for round := range 30 {
			var accepted sync.Map
			var nacc atomic.Int64
			var wg sync.WaitGroup
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 12 {
						id := [3]int{round, g, i}
						fd := rd
						op := Read(fd, make([]byte, 1), -1)
						if i%3 == 0 {
							op = Read(rd2, make([]byte, 1), -1).Unordered()
						}
						accepted.Store(id, new(atomic.Int32))
						if _, err := r.Submit(op.WithToken(tok).WithUser(id)); err != nil {
							accepted.Delete(id)
							t.Errorf("submit: %v", err)
							return
						}
						nacc.Add(1)
					}
				}()
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				for range 5 {
					assert.NoError(t, tok.Cancel())
				}
			}()
			go func() {
				defer wg.Done()
				for range 20 {
					if err := tok.Reset(); err != nil {
						assert.ErrorIs(t, err, ErrInvalid)
					}
				}
			}()
			wg.Wait()
			require.NoError(t, tok.Cancel())
			for got := int64(0); got < nacc.Load(); {
				var cs [16]Completion
				n, err := r.Reap(cs[:], 10*time.Second)
				require.NoError(t, err)
				require.NotZero(t, n, "round %d: %d of %d completions", round, got, nacc.Load())
				for _, c := range cs[:n] {
					v, ok := accepted.Load(c.User)
					require.True(t, ok, "completion of %v", c.User)
					assert.Equal(t, int32(1), v.(*atomic.Int32).Add(1), "%v", c.User)
					assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
				}
				got += int64(n)
			}
			assertNoMore(t, r)
			assert.Zero(t, tok.Pending())
			require.NoError(t, tok.Reset())
			total += int(nacc.Load())
		}
		assertSettled(t, r)
		st := r.Stats()
		assert.Equal(t, uint64(total), st.Canceled)
		assert.Equal(t, uint64(total), st.Submitted)
	})
}

// TestAdvForeignFromOtherRing: a foreign request's handle given to another
// ring (Complete, Cancel), a stale handle of a reused slot, and a Request
// of a Start given to Complete are all refused without touching anything;
// the request then completes once through its own ring.
func TestAdvForeignFromOtherRing(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
		require.NoError(t, err)
		defer other.Close()
		var hook atomic.Int32
		q, err := r.Submit(Foreign(func() { hook.Add(1) }).WithUser("mine"))
		require.NoError(t, err)
		oq, err := other.Submit(Foreign(nil).WithUser("other"))
		require.NoError(t, err)
		// Slot indices coincide: same index, another ring.
		assert.ErrorIs(t, other.Complete(q, 1, nil), ErrNotFound)
		assert.ErrorIs(t, r.Complete(oq, 1, nil), ErrNotFound)
		n, err := other.Cancel(q)
		assert.NoError(t, err)
		assert.Zero(t, n)
		assert.Zero(t, hook.Load(), "another ring's Cancel runs no hook")
		assert.True(t, q.Pending())

		// A started nop in the ring's other slot, delivered: then stale.
		s, err := r.Start(Nop())
		require.NoError(t, err)
		assert.ErrorIs(t, r.Complete(s, 0, nil), ErrNotFound, "not foreign")
		_, err = s.Wait(context.Background())
		require.NoError(t, err)
		assert.ErrorIs(t, r.Complete(s, 0, nil), ErrNotFound, "stale")

		require.NoError(t, r.Complete(q, 7, nil))
		c := reapOne(t, r)
		assert.Equal(t, "mine", c.User)
		assert.Equal(t, 7, c.N)
		assert.NoError(t, c.Err)
		require.NoError(t, other.Complete(oq, 3, nil))
		var cs [1]Completion
		k, err := other.Reap(cs[:], 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, 1, k)
		assert.Equal(t, "other", cs[0].User)
		assert.Equal(t, 3, cs[0].N)
		assertNoMore(t, r)
	})
}

// TestAdvRegisteredAfterUnregister: a ReadFixed in flight when its
// buffers are unregistered completes with its data (requests still using
// them complete normally); one submitted after, on the index that was
// valid, completes with EFAULT; an index beyond the registration limit is
// refused. A FixedFile read in flight when its files are unregistered
// still reads the registered file; one submitted after, on the old index,
// is refused with ErrInvalid.
func TestAdvRegisteredAfterUnregister(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		fixed := make([]byte, 64)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		q, err := r.Submit(ReadFixed(rd, fixed[8:16], -1, 0).WithUser("fixed"))
		require.NoError(t, err)
		require.NoError(t, r.UnregisterBuffers())
		_, err = unix.Write(wr, []byte("abcd"))
		require.NoError(t, err)
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.NoError(t, c.Err)
		assert.Equal(t, 4, c.N)
		assert.Equal(t, "abcd", string(fixed[8:12]))

		_, err = unix.Write(wr, []byte("efgh"))
		require.NoError(t, err)
		c = doOp(t, r, ReadFixed(rd, fixed[:4], -1, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "index 0 after Unregister")
		_, err = r.Submit(ReadFixed(rd, fixed[:4], -1, maxFixed))
		assert.ErrorIs(t, err, ErrInvalid)
		assert.ErrorIs(t, r.UnregisterBuffers(), unix.ENXIO, "twice")

		require.NoError(t, r.RegisterFiles([]int{-1, rd}))
		buf := make([]byte, 4)
		q, err = r.Submit(Read(1, buf, -1).FixedFile().WithUser("file"))
		require.NoError(t, err)
		require.NoError(t, r.UnregisterFiles())
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		require.NoError(t, c.Err, "read of the registered pipe")
		assert.Equal(t, "efgh", string(buf[:c.N]))
		_, err = r.Submit(Read(1, buf, -1).FixedFile())
		assert.ErrorIs(t, err, ErrInvalid, "index 1 after UnregisterFiles")
		assertSettled(t, r)
	})
}
