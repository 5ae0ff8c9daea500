//go:build linux

package ioring_test

// Adversarial round 20: the README's quick example, as a program using
// the package would write it (external test package, public API only),
// on both backends.

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv20DocsQuickExample is the README's "A quick example", line for line
// (Entries 256, a 4096-byte read at the current position, one token, a
// deadline, go tok.Cancel(), one Reap of up to 16 for 5 s), with the
// Println replaced by collecting the completions. cancel false leaves
// the cancel out, so that the deadline ends the read.
func adv20DocsQuickExample(backend ioring.Backend, fd int, deadline time.Duration, cancel bool) (got []ioring.Completion, err error) {
	r, err := ioring.New(ioring.Config{Entries: 256, Backend: backend}) // io_uring, or the fallback
	if err != nil {
		return nil, err
	}
	defer r.Close() // cancels everything and waits for every completion

	tok := r.NewToken() // one token can cover all of a device's I/O
	buf := make([]byte, 4096)
	if _, err := r.Submit(ioring.Read(fd, buf, -1).WithToken(tok).WithDeadline(deadline)); err != nil {
		return nil, err
	}

	if cancel {
		go tok.Cancel() // any goroutine, any time, any number of times
	}

	var done [16]ioring.Completion
	n, err := r.Reap(done[:], 5*time.Second)
	got = append(got, done[:n]...)
	if err != nil {
		return got, fmt.Errorf("reap: %w", err)
	}
	// Nothing more may come: exactly one completion per request.
	n, err = r.Reap(done[:], 0)
	got = append(got, done[:n]...)
	if err != nil && n > 0 {
		return got, err
	}
	return got, nil
}

// TestAdv20DocsQuickExample: the README's quick example does what its
// comments say on both backends: the token's cancel ends the read on an
// empty pipe with exactly one completion, ErrCanceled (which wraps
// ECANCELED, as the contract's point 2 says); without the cancel, the
// deadline ends it with ErrTimeout; Close returns.
func TestAdv20DocsQuickExample(t *testing.T) {
	for _, be := range []ioring.Backend{ioring.BackendURing, ioring.BackendPoll} {
		t.Run(be.String(), func(t *testing.T) {
			var p [2]int
			require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
			defer unix.Close(p[0])
			defer unix.Close(p[1])

			got, err := adv20DocsQuickExample(be, p[0], time.Minute, true)
			if errors.Is(err, ioring.ErrNotSupported) {
				t.Skipf("backend %v: %v", be, err)
			}
			require.NoError(t, err)
			if assert.Len(t, got, 1, "exactly one completion per request") {
				assert.ErrorIs(t, got[0].Err, ioring.ErrCanceled)
				assert.ErrorIs(t, got[0].Err, unix.ECANCELED, "ErrCanceled wraps ECANCELED")
				assert.Zero(t, got[0].N)
			}

			got, err = adv20DocsQuickExample(be, p[0], 50*time.Millisecond, false)
			require.NoError(t, err)
			if assert.Len(t, got, 1, "exactly one completion per request") {
				assert.ErrorIs(t, got[0].Err, ioring.ErrTimeout)
				assert.ErrorIs(t, got[0].Err, ioring.ErrCanceled, "ErrTimeout is a cancel too (its doc)")
			}

			// Data waiting: the read completes with its bytes, the cancel
			// after it changes nothing.
			_, err = unix.Write(p[1], []byte("hello"))
			require.NoError(t, err)
			got, err = adv20DocsQuickExample(be, p[0], time.Minute, false)
			require.NoError(t, err)
			if assert.Len(t, got, 1) {
				assert.NoError(t, got[0].Err)
				assert.Equal(t, 5, got[0].N)
			}
		})
	}
}
