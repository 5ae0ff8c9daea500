//go:build linux

package ioring

import (
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Adversarial tests that found behaviour at odds with the documentation.
// Each one is kept failing until the engine is fixed.

// TestAdvFileEmptyAtAfterClose: File.Close says "later calls fail with
// os.ErrClosed", and Read and Write with an empty buffer do. ReadAt and
// WriteAt with an empty buffer on a closed File must fail the same way,
// not report success (os.File's do fail with os.ErrClosed).
func TestAdvFileEmptyAtAfterClose(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("hello"))
		d, err := dupFD(int32(fd))
		require.NoError(t, err)
		f := NewFile(r, int(d), "adv")
		require.NoError(t, f.Close())

		// The non-empty forms and Read/Write refuse; they are the reference.
		_, err = f.Read(nil)
		require.ErrorIs(t, err, os.ErrClosed, "Read(nil) after Close")
		_, err = f.ReadAt(make([]byte, 1), 0)
		require.ErrorIs(t, err, os.ErrClosed, "ReadAt(1 byte) after Close")

		n, err := f.ReadAt(nil, 0)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, os.ErrClosed, "ReadAt(nil) after Close")
		n, err = f.WriteAt([]byte{}, 0)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, os.ErrClosed, "WriteAt(empty) after Close")
	})
}

// TestAdvBatchBadOpBehindFullRing: SubmitBatch "checks every op first: on
// bad input nothing is submitted". A batch of valid nops followed by an
// invalid read, on a ring with fewer free slots than the batch, must be
// refused whole with ErrInvalid, taking no slot, on every backend. (The
// poll backend does so; the io_uring fast path ran out of slots before it
// reached the bad op, submitted the first ops and said ErrFull.)
func TestAdvBatchBadOpBehindFullRing(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		// Two slots taken by polls that wait for data that never comes.
		a, err := r.Submit(Poll(rd, unix.POLLIN))
		require.NoError(t, err)
		b, err := r.Submit(Poll(rd, unix.POLLIN))
		require.NoError(t, err)
		before := r.Stats().Submitted

		ops := []Op{Nop(), Nop(), Nop(), Read(rd, nil, 0)} // the last one is bad
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		assert.ErrorIs(t, err, ErrInvalid, "a batch with a bad op")
		assert.NotErrorIs(t, err, ErrFull, "bad input is reported, not the slots")
		assert.Zero(t, n, "nothing of a batch with a bad op is submitted")
		handed := 0
		for _, q := range reqs {
			if q != (Request{}) {
				handed++
			}
		}
		assert.Zero(t, handed, "no Request handed out")
		assert.Equal(t, before, r.Stats().Submitted, "nothing accepted")

		// Whatever went in completes once; the polls end with their cancel.
		got, err := r.Cancel(a, b)
		require.NoError(t, err)
		assert.Equal(t, 2, got)
		seen := map[Request]int{}
		for range 2 + n {
			seen[reapOne(t, r).Req]++
		}
		assert.Equal(t, 1, seen[a])
		assert.Equal(t, 1, seen[b])
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestAdvBufRingCloseBeforeRecvSubmit: BufRing.Close "fails with EBUSY
// while a RecvMultishot on it is in flight", and a closed BufRing is
// refused at submission. So a Close and a Submit of a RecvMultishot on the
// same BufRing cannot both succeed: either the receive is in flight and
// Close says EBUSY, or the BufRing is closed and the Submit says
// ErrInvalid. Submit checks the BufRing before it takes the submission
// lock, and Close may close it in between: the two calls are lined up so
// by holding the ring's submission lock while Close, then Submit, queue
// for it (Close first, Submit after its check). Both then succeed, and the
// receive is in flight on a closed BufRing, whose buffer group the next
// NewBufRing reuses.
func TestAdvBufRingCloseBeforeRecvSubmit(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, _ := socketpair(t, unix.SOCK_STREAM)
		br, err := r.NewBufRing(2, 16)
		require.NoError(t, err)

		var q Request
		var submitErr, closeErr error
		var wg sync.WaitGroup
		r.sqMu.Lock()
		wg.Add(2)
		go func() { defer wg.Done(); closeErr = br.Close() }() // queues for the lock first
		time.Sleep(50 * time.Millisecond)
		go func() { defer wg.Done(); q, submitErr = r.Submit(RecvMultishot(a, br, 0)) }() // checks br, then queues
		time.Sleep(50 * time.Millisecond)
		r.sqMu.Unlock()
		wg.Wait()

		if submitErr == nil {
			if closeErr == nil {
				t.Errorf("BufRing.Close succeeded and a RecvMultishot on it was accepted: %v in flight on a closed BufRing", q)
			}
			_, _ = r.Cancel(q)
			for c := reapOne(t, r); c.More; c = reapOne(t, r) {
			}
		} else {
			assert.ErrorIs(t, submitErr, ErrInvalid, "a closed BufRing is refused")
		}
		if closeErr != nil {
			assert.ErrorIs(t, closeErr, unix.EBUSY)
			_ = br.Close()
		}
		assertSettled(t, r)
	})
}

// TestAdvInFlightWithinEntries: Ring.InFlight is the number of requests
// accepted and not yet taken in, and Stats' fields are "exact for their
// moment"; a ring never has more requests accepted than slots, so
// InFlight never exceeds Entries, and Stats.Completed, a count since New,
// never goes down. A goroutine submits batches three times larger than
// the ring (each fills the free slots and says ErrFull) and reaps, while
// another samples InFlight and Stats. SubmitBatch counts the whole batch
// in flight before it knows how many ops fit, and the rest out after, so
// the samples see more in flight than there are slots and Completed
// (Submitted - InFlight) falling.
func TestAdvInFlightWithinEntries(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := make([]Op, 3*r.Entries())
			for i := range ops {
				ops[i] = Nop()
			}
			reqs := make([]Request, len(ops))
			cs := make([]Completion, len(ops))
			for {
				select {
				case <-stop:
					return
				default:
				}
				n, err := r.SubmitBatch(ops, reqs)
				if err != nil && !errors.Is(err, ErrFull) {
					t.Errorf("SubmitBatch: %v", err)
					return
				}
				for got := 0; got < n; {
					k, err := r.Reap(cs, 10*time.Second)
					if err != nil || k == 0 {
						t.Errorf("Reap: %d, %v", k, err)
						return
					}
					got += k
				}
			}
		}()
		maxIn, drops := 0, 0
		var last uint64
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && maxIn <= r.Entries() && drops == 0 {
			maxIn = max(maxIn, r.InFlight())
			st := r.Stats()
			maxIn = max(maxIn, st.InFlight)
			if st.Completed < last {
				drops++
			}
			last = st.Completed
		}
		close(stop)
		wg.Wait()
		assert.LessOrEqual(t, maxIn, r.Entries(), "InFlight above the ring's slots")
		assert.Zero(t, drops, "Stats.Completed went down")
		assertSettled(t, r)
	})
}
