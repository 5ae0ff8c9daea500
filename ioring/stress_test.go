//go:build linux

package ioring

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// stressKind is what a stress request does.
type stressKind uint8

const (
	skPipeRead stressKind = iota
	skPipeWrite
	skFileRead
	skFileWrite
	skNop
	skTimeout
	skKinds
)

// stressRec is one submitted request, for the exactly-once check and the
// byte accounting.
type stressRec struct {
	kind  stressKind
	pipe  int
	buf   []byte
	count atomic.Int32 // completions delivered
}

// TestConformanceStress: 8 goroutines submit mixed requests (pipe and
// temp-file reads and writes, nops, timeouts, some with deadlines; some
// started and waited for under a context with a deadline) while
// another goroutine cancels tokens and single requests at random moments.
// Every request must complete exactly once, the bytes read from each pipe
// must be exactly the bytes written into it (as a multiset: concurrent
// reads may interleave), and nothing may leak.
func TestConformanceStress(t *testing.T) {
	total := 200000
	if testing.Short() {
		total = 20000
	}
	forEachBackend(t, 1024, func(t *testing.T, r *Ring) {
		stress(t, r, total)
	})
}

func stress(t *testing.T, r *Ring, total int) {
	const workers = 8
	const perWorkerInflight = 48
	type pipePair struct{ rd, wr int }
	pipes := make([]pipePair, workers)
	for i := range pipes {
		pipes[i].rd, pipes[i].wr = pipe(t)
		// A small pipe makes writers block too, so cancels hit them.
		unix.FcntlInt(uintptr(pipes[i].wr), unix.F_SETPIPE_SZ, 4096)
	}
	file := tempFile(t, make([]byte, 1<<20))

	recs := make([]*stressRec, total)
	var written, read [workers][256]int64
	var mu sync.Mutex // guards read counts and handles
	var handles []Request
	var next atomic.Int64
	var delivered, canceled, timedOut atomic.Int64
	inflight := make([]atomic.Int32, workers)

	tokens := make([]atomic.Pointer[Token], workers)
	for i := range tokens {
		tokens[i].Store(r.NewToken())
	}

	// deliver accounts one completion.
	deliver := func(c Completion) {
		id := c.User.(int)
		rec := recs[id]
		if n := rec.count.Add(1); n != 1 {
			t.Errorf("request %d (kind %d) completed %d times", id, rec.kind, n)
		}
		inflight[rec.pipe].Add(-1)
		delivered.Add(1)
		if c.Err != nil {
			canceled.Add(1)
			if errors.Is(c.Err, ErrTimeout) {
				timedOut.Add(1)
			}
			if !errors.Is(c.Err, ErrCanceled) {
				t.Errorf("request %d (kind %d): unexpected error %v", id, rec.kind, c.Err)
			}
			return
		}
		switch rec.kind {
		case skPipeRead:
			mu.Lock()
			for _, b := range rec.buf[:c.N] {
				read[rec.pipe][b]++
			}
			mu.Unlock()
		case skPipeWrite:
			mu.Lock()
			for _, b := range rec.buf[:c.N] {
				written[rec.pipe][b]++
			}
			mu.Unlock()
		}
	}

	stop := make(chan struct{})
	var cancelWG sync.WaitGroup
	cancelWG.Add(1)
	go func() { // the canceller
		defer cancelWG.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			switch rng.IntN(10) {
			case 0:
				w := rng.IntN(workers)
				old := tokens[w].Swap(r.NewToken())
				old.Cancel()
			case 1:
				if rng.IntN(20) == 0 {
					r.CancelAll()
				}
			default:
				mu.Lock()
				var q Request
				if len(handles) > 0 {
					q = handles[rng.IntN(len(handles))]
				}
				mu.Unlock()
				if err := q.Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("Request.Cancel: %v", err)
				}
			}
			if rng.IntN(4) == 0 {
				time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
			}
		}
	}()

	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 99))
			var cs [16]Completion
			for {
				id := int(next.Add(1) - 1)
				if id >= total {
					return
				}
				for inflight[w].Load() >= perWorkerInflight {
					n, err := r.Reap(cs[:], time.Millisecond)
					if err != nil {
						t.Errorf("Reap: %v", err)
						return
					}
					for _, c := range cs[:n] {
						deliver(c)
					}
				}
				rec := &stressRec{kind: stressKind(rng.IntN(int(skKinds))), pipe: w}
				recs[id] = rec
				var op Op
				switch rec.kind {
				case skPipeRead:
					rec.buf = make([]byte, 1+rng.IntN(512))
					op = Read(pipes[w].rd, rec.buf, -1)
				case skPipeWrite:
					rec.buf = make([]byte, 1+rng.IntN(512))
					for i := range rec.buf {
						rec.buf[i] = byte(rng.IntN(256))
					}
					op = Write(pipes[w].wr, rec.buf, -1)
				case skFileRead:
					rec.buf = make([]byte, 4096)
					op = Read(file, rec.buf, int64(w)*65536+int64(rng.IntN(15))*4096)
				case skFileWrite:
					rec.buf = make([]byte, 4096)
					op = Write(file, rec.buf, int64(w)*65536+int64(rng.IntN(15))*4096)
				case skNop:
					op = Nop()
				case skTimeout:
					op = Timeout(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
				if rng.IntN(8) == 0 {
					op = op.WithDeadline(time.Duration(50+rng.IntN(500)) * time.Microsecond)
				}
				if rng.IntN(3) > 0 {
					op = op.WithToken(tokens[w].Load())
				}
				inflight[w].Add(1)
				var q Request
				var err error
				switch rng.IntN(4) {
				case 0:
					q, err = r.Submit(op.WithUser(id))
				case 1:
					// The batch form, which checks, counts and
					// enqueues on a path of its own.
					var reqs [1]Request
					_, err = r.SubmitBatch([]Op{op.WithUser(id)}, reqs[:])
					q = reqs[0]
				case 2:
					// Submitted and reaped in one call: what comes
					// back may be any request's completion.
					var reqs [1]Request
					var n int
					_, n, err = r.SubmitAndReap([]Op{op.WithUser(id)}, reqs[:], cs[:], 0)
					q = reqs[0]
					for _, c := range cs[:n] {
						deliver(c)
					}
				case 3:
					// Started and waited for, with a context that ends
					// some of the waits (a cancel of the request).
					if q, err = r.Start(op.WithUser(id)); err == nil {
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Microsecond)
						c, werr := q.Wait(ctx)
						cancel()
						if werr != nil {
							t.Errorf("Wait: %v", werr)
							return
						}
						deliver(c)
					}
				}
				if err != nil {
					t.Errorf("Submit: %v", err)
					inflight[w].Add(-1)
					return
				}
				if rng.IntN(4) == 0 {
					mu.Lock()
					if len(handles) < 4096 {
						handles = append(handles, q)
					} else {
						handles[rng.IntN(len(handles))] = q
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	cancelWG.Wait()

	// Reads still pending on empty pipes and writes on full ones end by
	// cancel; then everything must have completed.
	require.NoError(t, r.CancelAll())
	var cs [64]Completion
	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < int64(total) && time.Now().Before(deadline) {
		n, err := r.Reap(cs[:], 100*time.Millisecond)
		require.NoError(t, err)
		for _, c := range cs[:n] {
			deliver(c)
		}
		if n == 0 {
			r.CancelAll()
		}
	}
	require.Equal(t, int64(total), delivered.Load(), "every request completed")
	// A completer publishes a completion before it counts the request out
	// of InFlight (whoever sees the count drop finds the completion), so
	// the last delivery may come a moment before the count reaches zero.
	assertSettled(t, r, "after every completion")
	for id, rec := range recs {
		if rec.count.Load() != 1 {
			t.Fatalf("request %d completed %d times", id, rec.count.Load())
		}
	}
	t.Logf("%d requests: %d canceled (%d by deadline)", total, canceled.Load(), timedOut.Load())
	assert.Positive(t, canceled.Load()-timedOut.Load(), "some cancels hit")
	assert.Positive(t, timedOut.Load(), "some deadlines fired")
	// Drain what is left in each pipe: written == read + left over.
	for w := range pipes {
		unix.SetNonblock(pipes[w].rd, true)
		buf := make([]byte, 8192)
		for {
			n, err := unix.Read(pipes[w].rd, buf)
			if n <= 0 || err != nil {
				break
			}
			for _, b := range buf[:n] {
				read[w][b]++
			}
		}
		assert.Equal(t, written[w], read[w], "pipe %d: bytes written and read differ", w)
	}
}
