package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A Ring that New did not make, nil or zero, is refused by every method
// with an error wrapping ErrInvalid: never a panic, and never an answer
// that pretends (ErrFull, or a registration that did nothing).
func TestZeroRing(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "zero": new(Ring)} {
		t.Run(name, func(t *testing.T) {
			refused := func(what string, err error) {
				t.Helper()
				require.ErrorIs(t, err, ErrInvalid, what)
				assert.Contains(t, err.Error(), "make rings with New", what)
			}
			dst := make([]Completion, 2)
			reqs := make([]Request, 1)
			_, err := r.Submit(Nop())
			refused("Submit", err)
			_, err = r.Start(Nop())
			refused("Start", err)
			_, err = r.SubmitBatch([]Op{Nop()}, reqs)
			refused("SubmitBatch", err)
			_, _, err = r.SubmitAndReap([]Op{Nop()}, reqs, dst, 0)
			refused("SubmitAndReap", err)
			_, err = r.Reap(dst, 0)
			refused("Reap", err)
			_, err = r.Reap(dst, -1) // would block forever
			refused("Reap blocking", err)
			_, err = r.Cancel(Request{})
			refused("Cancel", err)
			refused("CancelAll", r.CancelAll())
			_, err = r.Do(context.Background(), Nop())
			refused("Do", err)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err = r.Do(ctx, Nop())
			refused("Do, ended context", err)
			_, err = r.ReadAt(context.Background(), 0, make([]byte, 1), 0)
			refused("ReadAt", err)
			_, err = r.WriteAt(context.Background(), 1, make([]byte, 1), 0)
			refused("WriteAt", err)
			_, err = r.NewBufRing(1, 8)
			refused("NewBufRing", err)
			refused("RegisterFiles", r.RegisterFiles([]int{0}))
			refused("UnregisterFiles", r.UnregisterFiles())
			refused("Close", r.Close())
			refused("Complete", r.Complete(Request{}, 0, nil))
			assert.ErrorIs(t, r.Complete(Request{}, 0, nil), ErrNotFound, "no request of it is found either")
			assert.Zero(t, r.Entries())
			assert.Zero(t, r.InFlight())
			assert.Zero(t, r.Backend())
			assert.Zero(t, r.Stats().Submitted)

			tok := r.NewToken()
			assert.ErrorIs(t, tok.Cancel(), ErrInvalid)
			tok.Bind(ctx) // an ended context cancels it: refused quietly
			assert.False(t, tok.Canceled(), "a token of no ring cancels nothing")
		})
	}
}

// The other types' zero values and nil pointers are refused the same way.
func TestZeroOthers(t *testing.T) {
	var nilTok *Token
	assert.ErrorIs(t, nilTok.Cancel(), ErrInvalid)
	assert.ErrorIs(t, nilTok.Reset(), ErrInvalid)
	assert.False(t, nilTok.Canceled())
	assert.Zero(t, nilTok.Pending())
	stop := nilTok.Bind(context.Background())
	assert.True(t, stop(), "detached before its context ended")

	for name, b := range map[string]*BufRing{"nil": nil, "zero": new(BufRing)} {
		assert.ErrorIs(t, b.Close(), ErrInvalid, name)
		assert.ErrorIs(t, b.Release(0), ErrInvalid, name)
		assert.Nil(t, b.Buf(0), name)
		assert.Nil(t, b.Bytes(Completion{Buffer: true, N: 1}), name)
		assert.Zero(t, b.Count(), name)
		assert.Zero(t, b.Size(), name)
	}

	assert.Equal(t, "read: <nil>", (&OpError{Op: "read"}).Error())
	assert.NotPanics(t, func() { _ = (&HookPanicError{}).Error() })
	assert.NotPanics(t, func() { _ = (&IOError{}).Error() })

	// A Request of no ring.
	var q Request
	assert.ErrorIs(t, q.Cancel(), ErrNotFound)
	assert.False(t, q.Pending())
	wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := q.Wait(wctx)
	assert.ErrorIs(t, err, ErrNotFound)
}
