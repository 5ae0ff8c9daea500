package usb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// advAllowed reports whether err is one of the results a transfer may
// end with under the faults of the storms.
func advAllowed(err error) bool {
	for _, want := range []error{ErrCanceled, ErrTimeout, ErrStall, ErrNoDevice} {
		if errors.Is(err, want) {
			return true
		}
	}
	return err == nil
}

// advStorm submits rounds of random transfers (bulk IN of any size, bulk
// OUT echoes, interrupt IN, control GET_STATUS and vendor status), with
// random tokens and deadlines, while another goroutine injects faults
// (hang, resume, stall, latency, CancelAll, Request.Cancel, a token's
// cancel; unplug if unplug is set) at random moments. Every accepted
// transfer must complete exactly once with an allowed error, and Submit
// must refuse only with ErrNoDevice (after an unplug).
func advStorm(t *testing.T, seed uint64, unplug bool) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	rng := rand.New(rand.NewPCG(seed, 7))
	var mu sync.Mutex
	var live []ioring.Request
	tokens := []*ioring.Token{sd.r.NewToken(), sd.r.NewToken()}
	stop := make(chan struct{})
	chaosDone := make(chan struct{})
	chaosRng := rand.New(rand.NewPCG(seed, 11))
	go func() {
		defer close(chaosDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(chaosRng.IntN(3000)) * time.Microsecond):
			}
			switch chaosRng.IntN(10) {
			case 0:
				sd.s.Hang()
			case 1:
				sd.s.Resume()
			case 2:
				_ = sd.s.Stall([]uint8{usbsim.AddrBulkIn, usbsim.AddrBulkOut, usbsim.AddrInterruptIn}[chaosRng.IntN(3)])
			case 3:
				assert.NoError(t, sd.d.CancelAll())
			case 4, 5:
				mu.Lock()
				if len(live) > 0 {
					q := live[chaosRng.IntN(len(live))]
					mu.Unlock()
					err := q.Cancel()
					assert.True(t, err == nil || errors.Is(err, ioring.ErrNotFound), "Request.Cancel: %v", err)
				} else {
					mu.Unlock()
				}
			case 6:
				mu.Lock()
				tk := tokens[chaosRng.IntN(len(tokens))]
				mu.Unlock()
				assert.NoError(t, tk.Cancel())
			case 7:
				sd.s.SetLatency(time.Duration(chaosRng.IntN(2000)) * time.Microsecond)
			case 8:
				if unplug && chaosRng.IntN(4) == 0 {
					_ = sd.s.Unplug()
				}
			}
		}
	}()
	defer func() {
		close(stop)
		<-chaosDone
	}()

	seen := map[int]int{}
	id := 0
	for round := range 12 {
		k := 1 + rng.IntN(6)
		batch := 0
		for range k {
			var x Xfer
			x.User = id
			if rng.IntN(3) == 0 {
				mu.Lock()
				if rng.IntN(4) == 0 { // a fresh token now and then
					tokens[rng.IntN(len(tokens))] = sd.r.NewToken()
				}
				x.Token = tokens[rng.IntN(len(tokens))]
				mu.Unlock()
			}
			if rng.IntN(3) == 0 {
				x.Deadline = time.Duration(1+rng.IntN(20000)) * time.Microsecond
			}
			var q ioring.Request
			var err error
			switch rng.IntN(5) {
			case 0:
				q, err = sd.in.Submit(make([]byte, 1+rng.IntN(9000)), x)
			case 1:
				q, err = sd.out.Submit(usbsim.EchoCommand(bytes.Repeat([]byte{byte(id)}, rng.IntN(64))), x)
			case 2:
				q, err = sd.intr.Submit(make([]byte, 1+rng.IntN(64)), x)
			case 3:
				q, err = sd.d.SubmitControl(statusRequest(), x)
			case 4:
				buf := make([]byte, SetupSize+usbsim.EventSize)
				Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus, Length: usbsim.EventSize}.Put(buf)
				q, err = sd.d.SubmitControl(buf, x)
			}
			if err != nil {
				require.True(t, unplug && errors.Is(err, ErrNoDevice), "round %d submit %d: %v", round, id, err)
				id++
				continue
			}
			seen[id] = 0
			mu.Lock()
			live = append(live, q)
			mu.Unlock()
			id++
			batch++
		}
		// Let them run for a moment, then end every one that is left.
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
		if rng.IntN(2) == 0 {
			require.NoError(t, sd.d.CancelAll())
		} else {
			mu.Lock()
			qs := append([]ioring.Request(nil), live...)
			mu.Unlock()
			_, err := sd.r.Cancel(qs...)
			require.NoError(t, err)
		}
		for _, c := range Reap(t, sd.r, batch) {
			u := c.User.(int)
			seen[u]++
			assert.True(t, advAllowed(c.Err), "transfer %d: unexpected error %v", u, c.Err)
			assert.GreaterOrEqual(t, c.N, 0, "transfer %d", u)
		}
		mu.Lock()
		live = live[:0]
		mu.Unlock()
	}
	close(stop)
	<-chaosDone
	stop = make(chan struct{})
	chaosDone = make(chan struct{})
	close(chaosDone)
	AssertNoMore(t, sd.r)
	for u, n := range seen {
		assert.Equal(t, 1, n, "completions of transfer %d", u)
	}
	AssertSettled(t, sd.r)

	// Recovery: a device that is still there works again once resumed
	// and its halts cleared.
	sd.s.Resume()
	sd.s.SetLatency(0)
	for _, a := range []uint8{usbsim.AddrBulkIn, usbsim.AddrBulkOut, usbsim.AddrInterruptIn} {
		err := sd.d.ClearHalt(a)
		if unplugged(sd) {
			assert.ErrorIs(t, err, ErrNoDevice)
			continue
		}
		require.NoError(t, err, "clear halt %#02x", a)
	}
	if unplugged(sd) {
		ctx, cancel := testContext()
		defer cancel()
		_, err := sd.in.Transfer(ctx, make([]byte, 16))
		assert.ErrorIs(t, err, ErrNoDevice)
		return
	}
	advFlushIn(t, sd)
	ctx, cancel := testContext()
	defer cancel()
	msg := []byte(fmt.Sprintf("after storm %d", seed))
	sd.send(t, usbsim.EchoCommand(msg))
	n, err := sd.in.Transfer(ctx, make([]byte, 4096))
	require.NoError(t, err)
	assert.Equal(t, len(msg), n)
	st, err := sd.d.GetStatus(ctx, RecipientDevice, 0)
	require.NoError(t, err)
	assert.Zero(t, st)
}

// unplugged reports whether the scanner is unplugged.
func unplugged(sd *simDev) bool {
	_, err := sd.s.Endpoints()
	return err != nil
}

// advFlushIn ends the echoes and data the storm left on bulk IN: abort,
// then read until the zero-length marker.
func advFlushIn(t *testing.T, sd *simDev) {
	t.Helper()
	sd.send(t, usbsim.AbortCommand())
	buf := make([]byte, 4096)
	for i := 0; ; i++ {
		require.Less(t, i, 10000, "no zero-length marker on bulk IN")
		if len(sd.read(t, buf)) == 0 {
			return
		}
	}
}

func TestAdvStormFaults(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { advStorm(t, seed, false) })
	}
}

func TestAdvStormUnplug(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { advStorm(t, 100+seed, true) })
	}
}

// TestAdvCloseRaces: Device.Close racing Submit, ClearHalt, SetAltSetting,
// ReleaseInterface, CancelAll and the ring's CancelAll on a hung scanner:
// every call returns nil or a clear error, every accepted transfer
// completes exactly once, and nothing hangs or leaks.
func TestAdvCloseRaces(t *testing.T) {
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
			if i%2 == 0 {
				sd.s.Hang()
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			accepted := 0
			start := make(chan struct{})
			clearErr := func(what string, err error) {
				ok := err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ioring.ErrInvalid) ||
					errors.Is(err, ErrNotFound) || errors.Is(err, ErrStall)
				assert.True(t, ok, "%s: %v", what, err)
			}
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for j := range 6 {
						var err error
						switch (g + j) % 6 {
						case 0, 1:
							_, err = sd.in.Submit(make([]byte, 64), Xfer{User: g*100 + j})
							if err == nil {
								mu.Lock()
								accepted++
								mu.Unlock()
							}
						case 2:
							err = sd.d.ClearHalt(usbsim.AddrBulkIn)
						case 3:
							err = sd.d.SetAltSetting(0, usbsim.AltEventsOnly)
							if err == nil {
								err = sd.d.SetAltSetting(0, 0)
							}
						case 4:
							err = sd.d.CancelAll()
						case 5:
							err = sd.r.CancelAll()
						}
						clearErr(fmt.Sprintf("goroutine %d call %d", g, j), err)
					}
				}()
			}
			close(start)
			time.Sleep(time.Duration(i) * time.Millisecond)
			closed := make(chan error, 1)
			go func() { closed <- sd.d.Close() }()
			select {
			case err := <-closed:
				assert.NoError(t, err)
			case <-time.After(Patience):
				t.Fatal("Device.Close hangs")
			}
			wg.Wait()
			assert.ErrorIs(t, sd.d.Close(), ErrClosed)
			mu.Lock()
			n := accepted
			mu.Unlock()
			for _, c := range Reap(t, sd.r, n) {
				assert.True(t, c.Err == nil || errors.Is(c.Err, ErrCanceled), "transfer %v: %v", c.User, c.Err)
			}
			AssertNoMore(t, sd.r)
			AssertSettled(t, sd.r)
			_, err := sd.in.Submit(make([]byte, 8), Xfer{})
			assert.ErrorIs(t, err, ErrClosed)
			sd.s.Resume()
		})
	}
}

// TestAdvRingClosedFirst: the ring closed under a Device with transfers
// queued and in progress on a hung scanner cancels them all (each
// completes once), and the Device then closes without hanging; later
// calls fail clearly.
func TestAdvRingClosedFirst(t *testing.T) {
	CheckFDs(t)
	r, err := ioring.New(ioring.Config{Entries: 32})
	require.NoError(t, err)
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
	require.NoError(t, err)
	defer s.Close()
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	in, err := d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	out, err := d.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	s.Hang()
	var qs []ioring.Request
	for i := range 4 {
		q, err := in.Start(make([]byte, 100), Xfer{User: i})
		require.NoError(t, err)
		qs = append(qs, q)
	}
	q, err := out.Start(usbsim.EchoCommand([]byte("x")), Xfer{User: "out"})
	require.NoError(t, err)
	qs = append(qs, q)
	cbuf := statusRequest()
	q, err = d.StartControl(cbuf, Xfer{User: "ctl"})
	require.NoError(t, err)
	qs = append(qs, q)
	time.Sleep(Quiet)
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	ctx, cancel := testContext()
	defer cancel()
	for _, q := range qs {
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("Ring.Close hangs")
	}
	_, err = in.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ioring.ErrClosed)
	assert.NoError(t, d.CancelAll())
	assert.NoError(t, d.Close())
	s.Resume()
}

// TestAdvOutCanceledThenNext: an OUT transfer and a control transfer
// canceled while the device withholds their replies; after Resume the
// next ones get their own replies (the stale ones are skipped), and the
// data the canceled echo made the device send is there before the new
// echo's.
func TestAdvOutCanceledThenNext(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	sd.s.Hang()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := sd.out.Transfer(ctx, usbsim.EchoCommand([]byte("first")))
	cancel()
	require.ErrorIs(t, err, ErrTimeout)
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = sd.d.GetStatus(ctx, RecipientDevice, 0)
	cancel()
	require.ErrorIs(t, err, ErrTimeout)
	sd.s.Resume()
	sd.send(t, usbsim.EchoCommand([]byte("second")))
	ctx, cancel = testContext()
	defer cancel()
	st, err := sd.d.GetStatus(ctx, RecipientDevice, 0)
	require.NoError(t, err)
	assert.Zero(t, st)
	var got []string
	for range 2 {
		got = append(got, string(sd.read(t, make([]byte, 4096))))
	}
	assert.Equal(t, []string{"first", "second"}, got)
}
