//go:build linux

package ioring

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, deadlines at the edges: ported from liburing's
// timeout-overflow and submit-link-fail ideas (many timeouts and linked
// timeouts at once; a linked timeout that expires as its request
// completes; timeouts of extreme lengths).

// TestPort7TimeoutsSameMoment: one batch of Timeouts of 20ms, each with a
// deadline of 20ms too, and others whose deadline is far shorter or far
// longer than their duration. Each completes exactly once: those whose
// deadline and duration tie with 0 or ErrTimeout, the short-deadline ones
// with ErrTimeout, the long-deadline ones with 0; Stats.TimedOut counts
// the ErrTimeout completions delivered.
func TestPort7TimeoutsSameMoment(t *testing.T) {
	const tie, short, long = 96, 64, 64
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		before := r.Stats()
		ops := make([]Op, 0, tie+short+long)
		for range tie {
			ops = append(ops, Timeout(20*time.Millisecond).WithDeadline(20*time.Millisecond).WithUser("tie"))
		}
		for range short {
			ops = append(ops, Timeout(5*time.Second).WithDeadline(time.Millisecond).WithUser("short"))
		}
		for range long {
			ops = append(ops, Timeout(time.Millisecond).WithDeadline(5*time.Second).WithUser("long"))
		}
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, len(ops), n)
		got := port7ReapAll(t, r, len(ops))
		outs := map[string]map[string]int{"tie": {}, "short": {}, "long": {}}
		timedOut := 0
		for _, q := range reqs {
			c, ok := got[q]
			require.True(t, ok)
			outs[c.User.(string)][adv13Out(c)]++
			if errors.Is(c.Err, ErrTimeout) {
				timedOut++
			}
		}
		t.Logf("outcomes: %v", outs)
		assert.Equal(t, map[string]int{"timeout": short}, outs["short"])
		assert.Equal(t, map[string]int{"n=0": long}, outs["long"])
		assert.Equal(t, tie, outs["tie"]["n=0"]+outs["tie"]["timeout"], "tie: %v", outs["tie"])
		assertNoMore(t, r)
		after := r.Stats()
		assert.Equal(t, uint64(timedOut), after.TimedOut-before.TimedOut)
		assert.Equal(t, before.Canceled, after.Canceled, "nothing counted as canceled")
		assertSettled(t, r)
	})
}

// TestPort7DeadlineExtremes: durations and deadlines at their extremes.
// Timeout(0) and Timeout(1ns) complete at once with 0; a Timeout of
// MaxInt64 and requests with a deadline of MaxInt64 wait, and a cancel
// ends them with ErrCanceled (not ErrTimeout: the huge value did not wrap
// into the past); a deadline of 1ns ends a waiting Poll with ErrTimeout,
// and a held read too, without touching the read ahead of it, which
// then gets its data. Both backends alike.
func TestPort7DeadlineExtremes(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		rd, wr := pipe(t)
		for _, op := range []Op{Timeout(0), Timeout(1), Nop().WithDeadline(math.MaxInt64), Timeout(time.Millisecond).WithDeadline(math.MaxInt64)} {
			c := doOp(t, r, op)
			out = append(out, op.Code().String()+" "+adv13Out(c))
		}
		start := time.Now()
		waiting := []Op{
			Timeout(math.MaxInt64),
			Timeout(math.MaxInt64).WithDeadline(math.MaxInt64),
			Poll(rd, unix.POLLIN).WithDeadline(math.MaxInt64),
			Read(rd, make([]byte, 1), 0).WithDeadline(math.MaxInt64 - 1),
		}
		var qs []Request
		for _, op := range waiting {
			q, err := r.Submit(op)
			require.NoError(t, err)
			qs = append(qs, q)
		}
		time.Sleep(50 * time.Millisecond)
		var pend [4]Completion
		n, _ := r.Reap(pend[:], 0)
		require.Zero(t, n, "huge durations and deadlines wait: %+v", pend[:n])
		for _, q := range qs {
			require.NoError(t, q.Cancel())
		}
		gotc := port7ReapAll(t, r, len(qs))
		for i, q := range qs {
			out = append(out, "waiting "+waiting[i].Code().String()+" "+adv13Out(gotc[q]))
		}
		assert.Less(t, time.Since(start), 10*time.Second)

		c := doOp(t, r, Poll(rd, unix.POLLIN).WithDeadline(1))
		out = append(out, "poll 1ns "+adv13Out(c))

		head := make([]byte, 1)
		hq, err := r.Submit(Read(rd, head, -1).WithUser("head"))
		require.NoError(t, err)
		c = doOp(t, r, Read(rd, make([]byte, 1), -1).WithDeadline(1).WithUser("held"))
		out = append(out, "held read 1ns "+adv13Out(c))
		assert.True(t, hq.Pending(), "the head is untouched")
		_, err = unix.Write(wr, []byte("h"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, hq, c.Req)
		out = append(out, "head "+adv13Out(c)+" "+string(head[:max(c.N, 0)]))
		assertNoMore(t, r)
		return out
	})
	adv13Agree(t, got)
	for _, s := range got {
		assert.Equal(t, []string{
			"timeout n=0", "timeout n=0", "nop n=0", "timeout n=0",
			"waiting timeout canceled", "waiting timeout canceled", "waiting poll canceled", "waiting read canceled",
			"poll 1ns timeout", "held read 1ns timeout", "head n=1 h",
		}, s)
	}
}

// TestPort7DeadlineAsDataArrives: a read of a pipe whose deadline passes
// about when a writer writes: it completes once, either with the bytes or
// with ErrTimeout and the bytes still in the pipe for the next read;
// nothing is lost or read twice, round after round.
func TestPort7DeadlineAsDataArrives(t *testing.T) {
	const rounds = 60
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rnd := adv13Rand(t)
		rd, wr := pipe(t)
		outs := map[string]int{}
		for i := range rounds {
			d := time.Duration(500+rnd.IntN(2000)) * time.Microsecond
			w := d + time.Duration(rnd.IntN(600)-300)*time.Microsecond
			buf := make([]byte, 8)
			q, err := r.Submit(Read(rd, buf, -1).WithDeadline(d))
			require.NoError(t, err)
			msg := []byte{byte(i), byte(i >> 8), 0xAA}
			done := make(chan error, 1)
			go func() {
				time.Sleep(w)
				_, err := unix.Write(wr, msg)
				done <- err
			}()
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.NoError(t, <-done)
			outs[adv13Out(c)]++
			switch {
			case c.Err == nil:
				require.Equal(t, 3, c.N, "round %d", i)
				require.Equal(t, msg, buf[:3])
			case errors.Is(c.Err, ErrTimeout):
				require.Zero(t, c.N)
				c = doOp(t, r, Read(rd, buf, -1))
				require.NoError(t, c.Err)
				require.Equal(t, 3, c.N, "round %d: the bytes wait for the next read", i)
				require.Equal(t, msg, buf[:3])
			default:
				t.Fatalf("round %d: %v", i, c.Err)
			}
			require.True(t, pipeEmpty(t, rd), "round %d", i)
		}
		t.Logf("outcomes: %v", outs)
		assertNoMore(t, r)
	})
}

// TestPort7HeldReadsDeadlineRace: reads at the current position of a pipe,
// several at once (all but the first held in the stream's order), each
// with a short random deadline, while a writer writes a numbered stream at
// random moments. Whatever each deadline meets (held, in the kernel, or
// the data as it comes), the reads that report bytes, taken in submission
// order, carry the stream in order, and what is left is read afterwards:
// nothing lost, nothing twice, and a read that timed out reports no
// bytes.
func TestPort7HeldReadsDeadlineRace(t *testing.T) {
	const rounds, perRound = 80, 4
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rnd := adv13Rand(t)
		rd, wr := pipe(t)
		var want, have []byte
		next := byte(0)
		outs := map[string]int{}
		for i := range rounds {
			bufs := make([][]byte, perRound)
			qs := make([]Request, perRound)
			for k := range qs {
				bufs[k] = make([]byte, 1+rnd.IntN(6))
				d := time.Duration(100+rnd.IntN(1500)) * time.Microsecond
				var err error
				qs[k], err = r.Submit(Read(rd, bufs[k], -1).WithDeadline(d))
				require.NoError(t, err)
			}
			chunk := make([]byte, rnd.IntN(10))
			for j := range chunk {
				chunk[j] = next
				next++
			}
			want = append(want, chunk...)
			sleep := time.Duration(rnd.IntN(1500)) * time.Microsecond
			done := make(chan error, 1)
			go func() {
				time.Sleep(sleep)
				var err error
				if len(chunk) > 0 {
					_, err = unix.Write(wr, chunk)
				}
				done <- err
			}()
			got := port7ReapAll(t, r, perRound)
			require.NoError(t, <-done)
			for k, q := range qs {
				c := got[q]
				outs[adv13Out(c)]++
				switch {
				case c.Err == nil:
					require.Greater(t, c.N, 0, "round %d read %d: a pipe read that returns has bytes", i, k)
					have = append(have, bufs[k][:c.N]...)
				case errors.Is(c.Err, ErrTimeout):
					require.Zero(t, c.N)
				default:
					t.Fatalf("round %d read %d: %v", i, k, c.Err)
				}
			}
			require.Equal(t, string(want[:len(have)]), string(have), "round %d: the reads' bytes, in submission order, are the stream's", i)
		}
		// What the reads left.
		for len(have) < len(want) {
			buf := make([]byte, 64)
			c := doOp(t, r, Read(rd, buf, -1))
			require.NoError(t, c.Err)
			have = append(have, buf[:c.N]...)
		}
		require.Equal(t, string(want), string(have))
		require.True(t, pipeEmpty(t, rd))
		t.Logf("outcomes: %v", outs)
		assertNoMore(t, r)
	})
}
