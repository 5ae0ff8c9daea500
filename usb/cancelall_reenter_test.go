package usb

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeviceCancelAllFromHookDuringClose: a Runner's interruption (armed
// with Transfer.OnCancel) runs inside Device.CancelAll; one that calls
// Device.CancelAll again, while a Close waits for the outer CancelAll,
// gets ErrClosed at once, and the outer CancelAll, Close and the transfer
// all end (with a read-write lock there, the inner call waited behind
// the waiting Close, which waited for the outer call: a deadlock).
func TestDeviceCancelAllFromHookDuringClose(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 8)
	var d *Device
	inner := make(chan error, 1)
	closed := make(chan error, 1)
	running := make(chan struct{})
	run := &funcRunner{run: func(x *Transfer) (int, error) {
		stop := make(chan struct{})
		if !x.OnCancel(func() {
			go func() { closed <- d.Close() }()
			// Close has begun once its bit is set: it waits for this
			// CancelAll to end.
			deadline := time.Now().Add(Patience)
			for !d.cancels.closing() && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			inner <- d.CancelAll()
			close(stop)
		}) {
			return 0, ErrCanceled
		}
		close(running)
		<-stop
		return 0, ErrCanceled
	}}
	d = NewDevice(DeviceDesc{Endpoints: []EndpointDesc{pumpIn}}, NewPump(ring, []EndpointDesc{pumpIn}, run))
	ep, err := d.Endpoint(pumpIn.Address)
	require.NoError(t, err)
	q, err := ep.Submit(make([]byte, 64), Xfer{User: "x"})
	require.NoError(t, err)
	select {
	case <-running: // its interruption is armed
	case <-time.After(Patience):
		t.Fatal("the transfer did not start")
	}

	outer := make(chan error, 1)
	go func() { outer <- d.CancelAll() }()
	for what, ch := range map[string]chan error{"inner CancelAll": inner, "outer CancelAll": outer, "Close": closed} {
		select {
		case err := <-ch:
			if what == "inner CancelAll" {
				assert.ErrorIs(t, err, ErrClosed, what)
			} else {
				assert.NoError(t, err, what)
			}
		case <-time.After(Patience):
			t.Fatalf("%s did not return: deadlock", what)
		}
	}
	c := Reap(t, ring, 1)[0]
	assert.Equal(t, q, c.Req)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.ErrorIs(t, d.CancelAll(), ErrClosed)
	assert.Equal(t, int32(1), run.closed.Load())
}
