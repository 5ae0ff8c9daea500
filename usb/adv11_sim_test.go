package usb_test

// Adversarial round 11 on the simulated scanner (real kernel fds, real
// ring I/O): a ring token canceled at a random moment under a stream of
// echoes (rule 4: nothing submitted after the cancel reaches the device;
// what reached it is what the completions say), and unplug/replug rounds
// under load with exact-once accounting.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv11Seed returns CANCELIO_SEED if set, else a fresh seed, and logs it.
func adv11Seed(t *testing.T) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("CANCELIO_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		require.NoError(t, err, "CANCELIO_SEED")
		seed = v
	}
	t.Logf("seed %d (CANCELIO_SEED=%d repeats it)", seed, seed)
	return seed
}

// adv11Control is the buffer of a VendorCommand control transfer carrying
// cmd.
func adv11Control(cmd []byte) []byte {
	buf := make([]byte, SetupSize+len(cmd))
	Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand, Length: uint16(len(cmd))}.Put(buf)
	copy(buf[SetupSize:], cmd)
	return buf
}

// adv11Drain reads bulk IN messages until the echo of sentinel and
// returns those before it, as strings.
func adv11Drain(t *testing.T, sd *simDev, sentinel string) []string {
	t.Helper()
	sd.send(t, usbsim.EchoCommand([]byte(sentinel)))
	var got []string
	for {
		m := string(sd.read(t, make([]byte, 4096)))
		if m == sentinel {
			return got
		}
		got = append(got, m)
		require.Less(t, len(got), 10000, "no sentinel")
	}
}

// TestAdv11TokenFuture: one ring token covers a stream of bulk OUT echoes
// and control VendorCommand echoes (and bulk and interrupt reads), the
// device answering with a random latency; the token is canceled at a
// random moment while the stream goes on. Each accepted transfer
// completes exactly once. A transfer submitted after Token.Cancel
// returned completes with ErrCanceled at once (0 bytes) and never
// reaches the device. A bulk echo that completed with its bytes reached
// it, one that completed with 0 did not: the bulk IN stream, drained up
// to a sentinel, is exactly the echoes that reported their bytes, in
// submission order, plus control echoes submitted before the cancel (a
// canceled control OUT may have reached the device, as documented).
func TestAdv11TokenFuture(t *testing.T) {
	seed := adv11Seed(t)
	for round := range 6 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, uint64(round)))
			sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
			sd.s.SetLatency(time.Duration(rng.IntN(300)) * time.Microsecond)
			tok := sd.r.NewToken()
			var canceledAt atomic.Int64 // index of the first submission after the cancel returned
			canceledAt.Store(-1)
			type sub struct {
				tag     string
				bulk    bool // a bulk echo (else control echo or a read)
				read    bool
				after   bool // submitted after Token.Cancel returned
				q       ioring.Request
				payload int
			}
			var mu sync.Mutex
			var subs []*sub
			var next atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			// One submitter per kind keeps each endpoint's order the
			// order of the subs list.
			submit := func(kind int) {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					i := next.Add(1)
					after := canceledAt.Load() >= 0
					s := &sub{tag: fmt.Sprintf("e%d", i), after: after}
					var err error
					switch kind {
					case 0:
						s.bulk = true
						cmd := usbsim.EchoCommand([]byte(s.tag))
						s.payload = len(cmd)
						s.q, err = sd.out.Submit(cmd, Xfer{Token: tok, User: s})
					case 1:
						s.q, err = sd.d.SubmitControl(adv11Control(usbsim.EchoCommand([]byte(s.tag))), Xfer{Token: tok, User: s})
					case 2:
						s.read = true
						s.q, err = sd.intr.Submit(make([]byte, 64), Xfer{Token: tok, User: s})
					}
					if err != nil {
						assert.ErrorIs(t, err, ioring.ErrFull, "submit %s", s.tag)
						time.Sleep(time.Millisecond)
						continue
					}
					mu.Lock()
					subs = append(subs, s)
					n := len(subs)
					mu.Unlock()
					if n > 400 {
						return
					}
					if rng := rand.IntN(4); rng == 0 {
						time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
					}
				}
			}
			for kind := range 3 {
				wg.Add(1)
				go submit(kind)
			}
			// Completions, reaped as they come.
			done := map[*sub]ioring.Completion{}
			reap := func(want int, d time.Duration) {
				buf := make([]ioring.Completion, 64)
				deadline := time.Now().Add(d)
				for len(done) < want && time.Now().Before(deadline) {
					n, err := sd.r.Reap(buf, 10*time.Millisecond)
					require.NoError(t, err)
					for _, c := range buf[:n] {
						s := c.User.(*sub)
						_, twice := done[s]
						require.False(t, twice, "%s completed twice", s.tag)
						done[s] = c
					}
				}
			}
			reap(1<<30, time.Duration(rng.IntN(30))*time.Millisecond)
			require.NoError(t, tok.Cancel())
			canceledAt.Store(1)
			reap(1<<30, time.Duration(rng.IntN(10))*time.Millisecond)
			close(stop)
			wg.Wait()
			mu.Lock()
			all := subs
			mu.Unlock()
			reap(len(all), Patience)
			require.Len(t, done, len(all), "every accepted transfer completes")
			AssertNoMore(t, sd.r)
			sd.s.SetLatency(0)

			want := map[string]bool{}    // must be echoed
			mustNot := map[string]bool{} // must not be echoed
			maybe := map[string]bool{}   // may be echoed (a canceled control OUT)
			var order []string
			after := 0
			for _, s := range all {
				c := done[s]
				if s.after {
					after++
					assert.ErrorIs(t, c.Err, ErrCanceled, "%s submitted after the cancel", s.tag)
					assert.Zero(t, c.N, "%s submitted after the cancel", s.tag)
					if !s.read {
						mustNot[s.tag] = true
					}
					continue
				}
				assert.True(t, c.Err == nil || errors.Is(c.Err, ErrCanceled), "%s: %v", s.tag, c.Err)
				switch {
				case s.read:
				case s.bulk && c.N == s.payload:
					want[s.tag] = true
					order = append(order, s.tag)
				case s.bulk:
					assert.Zero(t, c.N, "%s: a bulk echo moves all or nothing", s.tag)
					assert.ErrorIs(t, c.Err, ErrCanceled, "%s", s.tag)
					mustNot[s.tag] = true
				case c.Err == nil:
					want[s.tag] = true
				default:
					maybe[s.tag] = true
				}
			}
			t.Logf("%d transfers, %d after the cancel, %d echoes expected", len(all), after, len(want))
			got := adv11Drain(t, sd, "sentinel")
			seen := map[string]int{}
			var gotBulk []string
			for _, m := range got {
				seen[m]++
				assert.True(t, want[m] || maybe[m], "echo %q: its transfer said it did not reach the device (or it was submitted after the cancel)", m)
				assert.False(t, mustNot[m], "echo %q must not be there", m)
				if want[m] && slicesContains(order, m) {
					gotBulk = append(gotBulk, m)
				}
			}
			for m := range want {
				assert.Equal(t, 1, seen[m], "echo %q", m)
			}
			assert.Equal(t, order, gotBulk, "bulk echoes in submission order")
			// The endpoints go on with a fresh token.
			tok2 := sd.r.NewToken()
			q, err := sd.out.Start(usbsim.EchoCommand([]byte("fresh")), Xfer{Token: tok2})
			require.NoError(t, err)
			c := adv11Wait(t, q, "fresh echo")
			assert.NoError(t, c.Err)
			assert.Equal(t, "fresh", string(sd.read(t, make([]byte, 4096))))
			require.NoError(t, sd.d.Close())
			AssertSettled(t, sd.r)
		})
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestAdv11UnplugReplugRounds: rounds of load (bulk IN and OUT, interrupt
// IN, control, through Submit, Start and the synchronous calls, some
// canceled by Request.Cancel) on a Device of the simulated scanner,
// unplugged at a random moment. Each accepted transfer completes exactly
// once: nil, ErrNoDevice, or ErrCanceled only when the test canceled it
// (an unplug is not a cancel); once the first ErrNoDevice was delivered,
// no transfer submitted later succeeds. Every call returns promptly.
// Then the scanner is plugged back in, a second Device is opened on the
// same ring while the first is still open, works, and goes on working
// when the first is closed. No fd or goroutine is left (CheckFDs,
// goleak).
func TestAdv11UnplugReplugRounds(t *testing.T) {
	seed := adv11Seed(t)
	CheckFDs(t)
	r := NewRing(t, 256)
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
	require.NoError(t, err)
	defer s.Close()
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	for round := range 5 {
		rng := rand.New(rand.NewPCG(seed, uint64(round)))
		s.SetLatency(time.Duration(rng.IntN(200)) * time.Microsecond)
		in, err := d.Endpoint(usbsim.AddrBulkIn)
		require.NoError(t, err)
		out, err := d.Endpoint(usbsim.AddrBulkOut)
		require.NoError(t, err)
		intr, err := d.Endpoint(usbsim.AddrInterruptIn)
		require.NoError(t, err)
		var goneSeen atomic.Bool // an ErrNoDevice was delivered
		var mu sync.Mutex
		type acc struct {
			canceled    bool
			afterGone   bool // submitted after an ErrNoDevice was delivered
			completions int
		}
		accepted := map[int64]*acc{}
		var ids atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		check := func(what string, err error, canceled, afterGone bool) {
			switch {
			case err == nil:
				assert.False(t, afterGone, "%s: succeeded after the device was known gone", what)
			case errors.Is(err, ErrNoDevice):
				goneSeen.Store(true)
			case errors.Is(err, ErrCanceled):
				assert.True(t, canceled, "%s: ErrCanceled, but nobody canceled it: %v", what, err)
			case errors.Is(err, ErrStall):
			default:
				t.Errorf("%s: %v", what, err)
			}
		}
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lr := rand.New(rand.NewPCG(seed, uint64(round*10+g)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					id := ids.Add(1)
					a := &acc{afterGone: goneSeen.Load()}
					var q ioring.Request
					var err error
					isSync := false
					switch lr.IntN(7) {
					case 0:
						q, err = in.Submit(make([]byte, 1+lr.IntN(4096)), Xfer{User: id})
					case 1:
						q, err = out.Submit(usbsim.EchoCommand([]byte("x")), Xfer{User: id})
					case 2:
						q, err = intr.Submit(make([]byte, 64), Xfer{User: id})
					case 3:
						q, err = sd11Control(d, id)
					case 4:
						isSync = true
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+lr.IntN(5))*time.Millisecond)
						_, err = d.GetStatus(ctx, RecipientDevice, 0)
						cancel()
						if err != nil && !errors.Is(err, ErrTimeout) {
							check(fmt.Sprintf("GetStatus %d", id), err, false, a.afterGone)
						}
					case 5:
						isSync = true
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+lr.IntN(5))*time.Millisecond)
						_, err = in.Read(ctx, make([]byte, 64))
						cancel()
						if err != nil && !errors.Is(err, ErrTimeout) {
							check(fmt.Sprintf("Read %d", id), err, false, a.afterGone)
						}
					case 6:
						isSync = true
						err = d.ClearHalt(usbsim.AddrInterruptIn)
						if err != nil && !errors.Is(err, ioring.ErrInvalid) {
							check(fmt.Sprintf("ClearHalt %d", id), err, false, a.afterGone)
						}
					}
					if isSync {
						continue
					}
					if err != nil {
						if errors.Is(err, ErrNoDevice) {
							goneSeen.Store(true)
						} else {
							assert.ErrorIs(t, err, ioring.ErrFull, "submit %d", id)
							time.Sleep(time.Millisecond)
						}
						continue
					}
					if lr.IntN(4) == 0 {
						a.canceled = true
					}
					mu.Lock()
					accepted[id] = a
					mu.Unlock()
					if a.canceled {
						if err := q.Cancel(); err != nil {
							assert.ErrorIs(t, err, ioring.ErrNotFound)
						}
					}
				}
			}()
		}
		// The reaper.
		reaped := make(chan struct{})
		var reapWG sync.WaitGroup
		reapWG.Add(1)
		go func() {
			defer reapWG.Done()
			buf := make([]ioring.Completion, 64)
			for {
				n, err := r.Reap(buf, 5*time.Millisecond)
				if !assert.NoError(t, err) {
					return
				}
				for _, c := range buf[:n] {
					id := c.User.(int64)
					mu.Lock()
					a := accepted[id]
					if a == nil { // accepted, not recorded yet: wait for it
						for a == nil {
							mu.Unlock()
							time.Sleep(50 * time.Microsecond)
							mu.Lock()
							a = accepted[id]
						}
					}
					a.completions++
					mu.Unlock()
					check(fmt.Sprintf("transfer %d", id), c.Err, a.canceled, a.afterGone)
				}
				if n == 0 {
					select {
					case <-reaped:
						return
					default:
					}
				}
			}
		}()
		time.Sleep(time.Duration(1+rng.IntN(30)) * time.Millisecond)
		require.NoError(t, s.Unplug())
		// The device is known gone within Patience: Submits fail.
		require.Eventually(t, func() bool {
			q, err := intr.Start(make([]byte, 64), Xfer{})
			if err == nil { // accepted before the device was known gone
				c := adv11Wait(t, q, "probe")
				check("probe", c.Err, false, false)
			}
			return errors.Is(err, ErrNoDevice)
		}, Patience, time.Millisecond)
		time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
		close(stop)
		wg.Wait()
		// Every accepted transfer completes.
		require.Eventually(t, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, a := range accepted {
				if a.completions == 0 {
					return false
				}
			}
			return true
		}, Patience, time.Millisecond, "every accepted transfer completes")
		close(reaped)
		reapWG.Wait()
		mu.Lock()
		for id, a := range accepted {
			assert.Equal(t, 1, a.completions, "transfer %d", id)
		}
		t.Logf("round %d: %d transfers accepted", round, len(accepted))
		mu.Unlock()
		// Every call on the gone device returns promptly and clearly.
		ctx, cancel := context.WithTimeout(context.Background(), Patience)
		_, err = d.GetStatus(ctx, RecipientDevice, 0)
		cancel()
		assert.ErrorIs(t, err, ErrNoDevice)
		assert.ErrorIs(t, d.ClearHalt(usbsim.AddrBulkIn), ErrNoDevice)
		assert.ErrorIs(t, d.SetAltSetting(0, usbsim.AltEventsOnly), ErrNoDevice)
		assert.NoError(t, d.CancelAll())
		_, err = usbsim.Open(r, s)
		assert.ErrorIs(t, err, ErrNoDevice, "open while unplugged")

		require.NoError(t, s.Replug())
		d2, err := usbsim.Open(r, s)
		require.NoError(t, err)
		adv11Echo(t, d2, fmt.Sprintf("round %d before", round))
		// The old Device, still open, stays gone for good.
		_, err = in.Submit(make([]byte, 8), Xfer{})
		assert.ErrorIs(t, err, ErrNoDevice, "the old Device after Replug")
		require.NoError(t, d.Close())
		adv11Echo(t, d2, fmt.Sprintf("round %d after", round))
		AssertNoMore(t, r)
		d = d2
	}
	require.NoError(t, d.Close())
	AssertSettled(t, r)
}

// sd11Control submits a VendorStatus control IN transfer.
func sd11Control(d *Device, id int64) (ioring.Request, error) {
	buf := make([]byte, SetupSize+usbsim.EventSize)
	Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus, Length: usbsim.EventSize}.Put(buf)
	return d.SubmitControl(buf, Xfer{User: id})
}

// adv11Echo sends msg as an echo on d and reads it back, skipping what an
// earlier Device left on bulk IN.
func adv11Echo(t *testing.T, d *Device, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	out, err := d.OutEndpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	in, err := d.InEndpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	_, err = out.Write(ctx, usbsim.EchoCommand([]byte(msg)))
	require.NoError(t, err)
	buf := make([]byte, 4096)
	for {
		n, err := in.Read(ctx, buf)
		require.NoError(t, err)
		if string(buf[:n]) == msg {
			return
		}
		require.False(t, strings.HasPrefix(string(buf[:n]), "round"), "an echo out of order: %q", buf[:n])
	}
}
