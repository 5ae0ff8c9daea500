package usb_test

// Adversarial round 16: the simulated scanner hanging mid-image
// (HangAfter at random byte counts, Resume after a random while) under
// bulk IN reads of random sizes (bounced and direct) that deadlines,
// Request.Cancel and Device.CancelAll end at random moments. Every read
// completes exactly once, and the bytes the completions report,
// concatenated in submission order, are the image exactly: a canceled
// read loses nothing and duplicates nothing.

import (
	"bytes"
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
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestAdv16HangAfterImage(t *testing.T) {
	seed := adv11Seed(t)
	rng := rand.New(rand.NewPCG(seed, 16))
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 512})
	p := usbsim.ScanParams{DPI: 150, Width: 1000, Height: 300, Format: usbsim.FormatGray8, Seed: seed}
	want := usbsim.ExpectedImage(p)
	mt := sd.in.Desc().MaxTransfer

	// The fault injector: hang after a random number of bytes, resume
	// after a random while, until stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	frng := rand.New(rand.NewPCG(seed, 61))
	go func() {
		defer wg.Done()
		for {
			sd.s.HangAfter(1 + frng.Int64N(int64(mt/2)))
			select {
			case <-stop:
				sd.s.Resume()
				return
			case <-time.After(time.Duration(frng.IntN(3000)) * time.Microsecond):
			}
			sd.s.Resume()
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(frng.IntN(500)) * time.Microsecond):
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	sd.send(t, usbsim.StartScanCommand(p))
	var got []byte
	deadline := time.Now().Add(4 * Patience)
	rounds := 0
	for ; len(got) < len(want); rounds++ {
		require.True(t, time.Now().Before(deadline), "image not received in time: %d of %d bytes after %d rounds", len(got), len(want), rounds)
		// A batch of 1..4 reads queued at once, of random sizes.
		k := 1 + rng.IntN(4)
		bufs := make([][]byte, k)
		reqs := make([]ioring.Request, k)
		for i := range k {
			size := 1 + rng.IntN(mt/8)
			switch rng.IntN(4) {
			case 0:
				size = mt
			case 1:
				size = 1 + rng.IntN(2*mt)
			}
			bufs[i] = make([]byte, size)
			x := Xfer{}
			if rng.IntN(3) == 0 {
				x.Deadline = time.Duration(1+rng.IntN(3000)) * time.Microsecond
			}
			q, err := sd.in.Start(bufs[i], x)
			require.NoError(t, err)
			reqs[i] = q
		}
		switch rng.IntN(4) {
		case 0:
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			_ = reqs[rng.IntN(k)].Cancel()
		case 1:
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			require.NoError(t, sd.d.CancelAll())
		}
		for i, q := range reqs {
			if len(got) == len(want) {
				// The image is in: nothing more comes for the reads left.
				_ = q.Cancel()
			}
			ctx, cancel := context.WithTimeout(context.Background(), Patience)
			c, err := q.Wait(ctx)
			ended := ctx.Err()
			cancel()
			require.NoError(t, err, "read %d of round %d: no completion", i, rounds)
			require.NoError(t, ended, "read %d of round %d: no completion within %v", i, rounds, Patience)
			if c.Err != nil && !errors.Is(c.Err, ErrCanceled) {
				require.NoError(t, c.Err, "read %d of round %d", i, rounds)
			}
			require.LessOrEqual(t, c.N, len(bufs[i]))
			got = append(got, bufs[i][:c.N]...)
		}
		require.LessOrEqual(t, len(got), len(want), "more bytes than the image")
		require.True(t, bytes.Equal(want[:len(got)], got), "the image differs within its first %d bytes (round %d)", len(got), rounds)
	}
	t.Logf("%d bytes in %d rounds (MaxTransfer %d)", len(got), rounds, mt)
	assert.Equal(t, len(want), len(got))
	AssertSettled(t, sd.r)
}
