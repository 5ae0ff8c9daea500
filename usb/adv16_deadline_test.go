package usb_test

// Adversarial round 16: a Pump's transfers whose deadline fires at the
// moment their Runner's I/O ends by itself, on several endpoints at once,
// with a token canceled at a random moment too. Each transfer completes
// exactly once: its whole buffer and nil (the I/O won), or ErrTimeout
// (the deadline won) or ErrCanceled (the token won) with 0 bytes; never
// both, never a count with a cancel the Runner did not report.

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
)

func TestAdv16DeadlineAtCompletion(t *testing.T) {
	CheckFDs(t)
	seed := adv11Seed(t)
	ring := NewRing(t, 256)
	// Run takes as long as the transfer's buffer says (its first byte, in
	// 100 µs), unless interrupted first.
	r := &adv11Runner{run: func(tr *Transfer) (int, error) {
		stopped := make(chan struct{})
		var once sync.Once
		if !tr.OnCancel(func() { once.Do(func() { close(stopped) }) }) {
			return 0, ErrCanceled
		}
		timer := time.NewTimer(time.Duration(tr.Buf()[0]) * 100 * time.Microsecond)
		defer timer.Stop()
		select {
		case <-timer.C:
			return len(tr.Buf()), nil
		case <-stopped:
			return 0, ErrCanceled
		}
	}}
	d := adv11PumpDev(t, ring, r)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	out, err := d.Endpoint(adv11Out.Address)
	require.NoError(t, err)

	var wg sync.WaitGroup
	for w, ep := range []*Endpoint{in, out, in, out} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for round := range 40 {
				tok := ring.NewToken()
				const k = 4
				reqs := make([]ioring.Request, k)
				for i := range k {
					buf := make([]byte, 1+rng.IntN(64))
					buf[0] = byte(rng.IntN(20))
					// The deadline: the Run's own time, give or take the
					// moment the transfer waited in the queue.
					x := Xfer{Token: tok, Deadline: time.Duration(buf[0])*100*time.Microsecond + time.Duration(rng.IntN(200))*time.Microsecond, User: len(buf)}
					q, err := ep.Start(buf, x)
					if !assert.NoError(t, err) {
						return
					}
					reqs[i] = q
				}
				if rng.IntN(3) == 0 {
					time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
					assert.NoError(t, tok.Cancel())
				}
				for i, q := range reqs {
					ctx, cancel := context.WithTimeout(context.Background(), Patience)
					c, err := q.Wait(ctx)
					ended := ctx.Err()
					cancel()
					if !assert.NoError(t, err) || !assert.NoError(t, ended, "worker %d round %d transfer %d: no completion", w, round, i) {
						return
					}
					switch {
					case c.Err == nil:
						assert.Equal(t, c.User, c.N, "a transfer that won reports its bytes")
					case errors.Is(c.Err, ErrCanceled):
						assert.Zero(t, c.N, "a canceled transfer moved nothing: %v", c.Err)
					default:
						t.Errorf("worker %d round %d transfer %d: %v", w, round, i, c.Err)
					}
					assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "a completed transfer is found again")
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(t, d.Close())
	assert.EqualValues(t, 1, r.closes.Load())
	AssertSettled(t, ring)
}
