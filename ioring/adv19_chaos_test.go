//go:build linux

package ioring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv19Req is what the chaos driver knows of one accepted request.
type adv19Req struct {
	id       int
	q        Request
	pipe     int // -1: foreign
	buf      []byte
	deadline bool // a deadline that may fire (not an hour or more)
	ctxDL    bool // Wait under a context with a deadline
	ctxCan   bool // Wait under a context that is canceled
	tok      int  // -1: none
	tokGen   int  // the token's generation (Resets) at submission
	canceled bool // Request.Cancel or Ring.Cancel named it
	foreign  bool
	realN    int  // a foreign request completed by its owner with realN
	nopped   bool // completed at its submission (its token was canceled)
	done     bool
	c        Completion
}

// TestAdv19TokenDeadlineChaos drives one ring per backend with a random
// mix of ordered reads on two pipes (some of them held behind others),
// foreign requests, tokens that are canceled and Reset, per-request
// deadlines from 1ns to MaxInt64, Waits under contexts that end, and
// cancels of single requests and of several; then it checks every promise
// that holds whatever the timing: one completion per accepted request, a
// cause that some cancel actually asked for (ErrTimeout only with a
// deadline, a context's error only with that context, ErrCanceled only
// when a cancel named the request or its token), the pipes' bytes
// delivered in submission order without loss, and tokens that can be
// Reset once their members completed.
func TestAdv19TokenDeadlineChaos(t *testing.T) {
	seed := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d (CANCELIO_SEED)", seed)
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(seed, seed^0x19))
		var rds, wrs [2]int
		for i := range rds {
			rds[i], wrs[i] = pipe(t)
		}
		var written [2][]byte
		toks := []*Token{r.NewToken(), r.NewToken(), r.NewToken()}
		tokGen := make([]int, len(toks))
		// tokCanceled[k][gen]: Cancel was called on token k in generation gen.
		tokCanceled := make([]map[int]bool, len(toks))
		for i := range tokCanceled {
			tokCanceled[i] = map[int]bool{}
		}

		var mu sync.Mutex
		reqs := map[uint64]*adv19Req{}
		var all []*adv19Req
		var problems []string
		bad := func(f string, a ...any) {
			mu.Lock()
			problems = append(problems, fmt.Sprintf(f, a...))
			mu.Unlock()
		}
		deliver := func(c Completion, who string) {
			mu.Lock()
			defer mu.Unlock()
			x, ok := reqs[c.Req.ID()]
			if !ok {
				problems = append(problems, fmt.Sprintf("%s: completion of unknown request %v (%v)", who, c.Req, c.Err))
				return
			}
			if x.done {
				problems = append(problems, fmt.Sprintf("%s: second completion of request %d: %v then %v", who, x.id, x.c.Err, c.Err))
				return
			}
			if c.More {
				problems = append(problems, fmt.Sprintf("%s: More set on one-shot request %d", who, x.id))
			}
			x.done, x.c = true, c
		}
		var wg sync.WaitGroup
		var foreignMu sync.Mutex
		ownerDone := map[uint64]bool{}
		completeForeign := func(x *adv19Req, n int, err error) {
			foreignMu.Lock()
			defer foreignMu.Unlock()
			mu.Lock()
			q, nopped := x.q, x.nopped
			mu.Unlock()
			if ownerDone[q.ID()] {
				return
			}
			ownerDone[q.ID()] = true
			if e := r.Complete(q, n, err); e != nil && !nopped {
				bad("Complete of foreign request %d: %v", x.id, e)
			}
		}
		reap := func(timeout time.Duration) {
			var cs [16]Completion
			n, err := r.Reap(cs[:], timeout)
			if err != nil && !errors.Is(err, ErrClosed) {
				bad("Reap: %v", err)
			}
			for _, c := range cs[:n] {
				deliver(c, "Reap")
			}
		}
		durs := []time.Duration{0, 0, 0, time.Nanosecond, time.Millisecond, 3 * time.Millisecond, time.Hour, math.MaxInt64}
		pending := func() []*adv19Req {
			mu.Lock()
			defer mu.Unlock()
			var p []*adv19Req
			for _, x := range all {
				if !x.done {
					p = append(p, x)
				}
			}
			return p
		}
		submit := func(op Op, x *adv19Req, start bool) {
			if x.tok >= 0 {
				op = op.WithToken(toks[x.tok])
			}
			var q Request
			var err error
			mu.Lock() // the request is known before its completion can be delivered
			defer mu.Unlock()
			if start {
				q, err = r.Start(op)
			} else {
				q, err = r.Submit(op)
			}
			if errors.Is(err, ErrFull) {
				return
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("submit %d: %v", len(all), err))
				return
			}
			x.id, x.q = len(all), q
			x.nopped = !q.Pending()
			reqs[q.ID()] = x
			all = append(all, x)
		}

		for step := 0; step < 400; step++ {
			switch k := rng.IntN(24); {
			case k < 7: // an ordered read, maybe held behind others
				p := rng.IntN(2)
				x := &adv19Req{pipe: p, buf: make([]byte, 1+rng.IntN(4)), tok: rng.IntN(len(toks)+1) - 1}
				d := durs[rng.IntN(len(durs))]
				x.deadline = d > 0 && d < time.Hour
				if x.tok >= 0 {
					x.tokGen = tokGen[x.tok]
				}
				op := Read(rds[p], x.buf, -1).WithDeadline(d)
				start := rng.IntN(3) == 0
				var ctx context.Context
				var cancel context.CancelFunc
				if start {
					switch rng.IntN(3) {
					case 0:
						ctx, cancel = context.Background(), func() {}
					case 1:
						ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.IntN(3000))*time.Microsecond)
						x.ctxDL = true
					case 2:
						ctx, cancel = context.WithCancel(context.Background())
						x.ctxCan = true
					}
				}
				submit(op, x, start)
				if start && x.q != (Request{}) {
					if x.ctxCan && rng.IntN(2) == 0 {
						cancel()
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer cancel()
						c, err := x.q.Wait(ctx)
						if err != nil {
							bad("Wait of %d: %v", x.id, err)
							return
						}
						deliver(c, "Wait")
					}()
				} else if cancel != nil {
					cancel()
				}
			case k < 11: // data for the pipes' readers
				p := rng.IntN(2)
				b := make([]byte, 1+rng.IntN(6))
				for i := range b {
					b[i] = byte(len(written[p]) + i)
				}
				n, err := unix.Write(wrs[p], b)
				require.NoError(t, err)
				written[p] = append(written[p], b[:n]...)
			case k < 13: // a foreign request
				x := &adv19Req{pipe: -1, foreign: true, tok: rng.IntN(len(toks)+1) - 1}
				d := durs[rng.IntN(len(durs))]
				x.deadline = d > 0 && d < time.Hour
				if x.tok >= 0 {
					x.tokGen = tokGen[x.tok]
				}
				op := Foreign(func() {
					// The transport says canceled, from elsewhere.
					wg.Add(1)
					go func() { defer wg.Done(); completeForeign(x, 0, ErrCanceled) }()
				}).WithDeadline(d)
				submit(op, x, false)
			case k < 14: // a foreign request finishes on its own
				for _, x := range pending() {
					if x.foreign && rng.IntN(2) == 0 {
						mu.Lock()
						x.realN = 7
						mu.Unlock()
						completeForeign(x, 7, nil)
						break
					}
				}
			case k < 15: // cancel one
				if p := pending(); len(p) > 0 {
					x := p[rng.IntN(len(p))]
					mu.Lock()
					x.canceled = true
					mu.Unlock()
					if err := x.q.Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
						bad("Cancel of %d: %v", x.id, err)
					}
				}
			case k < 16: // cancel several
				p := pending()
				var qs []Request
				mu.Lock()
				for _, x := range p {
					if rng.IntN(3) == 0 {
						x.canceled = true
						qs = append(qs, x.q)
					}
				}
				mu.Unlock()
				if _, err := r.Cancel(qs...); err != nil {
					bad("Ring.Cancel: %v", err)
				}
			case k < 17: // a token is canceled
				i := rng.IntN(len(toks))
				mu.Lock()
				tokCanceled[i][tokGen[i]] = true
				mu.Unlock()
				if err := toks[i].Cancel(); err != nil {
					bad("Token.Cancel: %v", err)
				}
			case k < 19: // a token is Reset, when its members completed
				i := rng.IntN(len(toks))
				if err := toks[i].Reset(); err == nil {
					mu.Lock()
					tokGen[i]++
					mu.Unlock()
				} else if !errors.Is(err, ErrInvalid) {
					bad("Token.Reset: %v", err)
				}
			default:
				reap(0)
			}
		}

		// Wind down: data enough for every read left, the foreign requests
		// finished by their owners, then everything collected.
		for p := range wrs {
			b := bytes.Repeat([]byte{0xEE}, 4*64)
			n, err := unix.Write(wrs[p], b)
			require.NoError(t, err)
			written[p] = append(written[p], b[:n]...)
		}
		for _, x := range pending() {
			if x.foreign {
				completeForeign(x, 7, nil)
				mu.Lock()
				if !x.done && x.realN == 0 {
					x.realN = -1 // finished by its owner, unless a cancel's hook won
				}
				mu.Unlock()
			}
		}
		limit := time.Now().Add(20 * time.Second)
		for len(pending()) > 0 {
			if time.Now().After(limit) {
				p := pending()
				t.Fatalf("%d requests never completed, first: %+v; InFlight %d", len(p), *p[0], r.InFlight())
			}
			reap(10 * time.Millisecond)
		}
		wg.Wait()
		assertSettled(t, r)
		for _, p := range problems {
			t.Error(p)
		}

		// Causes.
		got := [2][]byte{}
		for _, x := range all {
			c := x.c
			tokCan := x.tok >= 0 && tokCanceled[x.tok][x.tokGen]
			switch {
			case errors.Is(c.Err, context.DeadlineExceeded) || errors.Is(c.Err, context.Canceled):
				if errors.Is(c.Err, context.DeadlineExceeded) && !x.ctxDL || errors.Is(c.Err, context.Canceled) && !x.ctxCan {
					t.Errorf("request %d (%+v): a context's error without that context: %v", x.id, *x, c.Err)
				}
			case errors.Is(c.Err, ErrTimeout):
				if !x.deadline {
					t.Errorf("request %d (%+v): ErrTimeout without a deadline that could fire", x.id, *x)
				}
			case errors.Is(c.Err, ErrCanceled):
				if !x.canceled && !tokCan {
					t.Errorf("request %d (%+v): ErrCanceled, but neither it nor its token (generation %d) was canceled", x.id, *x, x.tokGen)
				}
			case c.Err != nil:
				t.Errorf("request %d (%+v): unexpected error %v", x.id, *x, c.Err)
			case x.foreign:
				if c.N != 7 {
					t.Errorf("foreign request %d: n=%d, want its owner's 7", x.id, c.N)
				}
			}
			if x.pipe >= 0 && c.N > 0 {
				got[x.pipe] = append(got[x.pipe], x.buf[:c.N]...)
			}
		}
		outcomes := map[string]int{}
		for _, x := range all {
			outcomes[adv13Out(x.c)]++
		}
		t.Logf("%d requests: %v", len(all), outcomes)
		// Bytes: the reads took a prefix of each stream, in submission
		// order; what is left is still in the pipe.
		for p := range rds {
			rest := make([]byte, 4096)
			require.NoError(t, unix.SetNonblock(rds[p], true))
			n, err := unix.Read(rds[p], rest)
			if err == unix.EAGAIN {
				n = 0
			} else {
				require.NoError(t, err)
			}
			if all := append(got[p], rest[:n]...); !bytes.Equal(all, written[p]) {
				t.Errorf("pipe %d: reads in submission order, then the rest, give\n%v\nwant\n%v", p, all, written[p])
			}
		}
		for i, tk := range toks {
			if n := tk.Pending(); n != 0 {
				t.Errorf("token %d: Pending %d after every completion", i, n)
			}
			require.NoError(t, tk.Reset(), "token %d", i)
			require.False(t, tk.Canceled())
		}
	})
}
