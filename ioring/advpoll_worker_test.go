//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The poll backend's worker pool under more work than it has workers, with
// cancels, tokens, deadlines and Close arriving while workers run.

// TestAdvPollWorkersSaturatedThenClosed submits many times more file
// operations than the pool has workers (writes at offsets, fsyncs, opens,
// statx), some with a deadline of a few microseconds, some under a token
// canceled at a random moment, some canceled one by one, and closes the
// ring while workers still run. Every request completes exactly once; a
// write that reports success wrote its bytes; on the poll backend, whose
// queued requests never run once canceled, a canceled write wrote nothing.
func TestAdvPollWorkersSaturatedThenClosed(t *testing.T) {
	for round := range 4 {
		forEachBackend(t, 256, func(t *testing.T, r *Ring) {
			rng := rand.New(rand.NewPCG(uint64(round), 99))
			dir := t.TempDir()
			const n, size = 200, 8 << 10
			fd := tempFile(t, nil)
			require.NoError(t, unix.Ftruncate(fd, n*size))
			tok := r.NewToken()
			reqs := make([]Request, 0, n)
			kind := map[Request]int{}
			for i := range n {
				var op Op
				switch i % 10 {
				case 7:
					op = Fsync(fd)
				case 8:
					op = OpenAt(unix.AT_FDCWD, filepath.Join(dir, "f"+strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
				case 9:
					op = Statx(unix.AT_FDCWD, dir, 0, unix.STATX_SIZE, new(unix.Statx_t))
				default:
					op = Write(fd, bytes.Repeat([]byte{byte(1 + i%250)}, size), int64(i*size))
				}
				switch rng.IntN(4) {
				case 0:
					op = op.WithDeadline(time.Duration(1+rng.IntN(200)) * time.Microsecond)
				case 1:
					op = op.WithToken(tok)
				}
				q, err := r.Submit(op.WithUser(i))
				require.NoError(t, err)
				reqs = append(reqs, q)
				kind[q] = i
			}
			var wg sync.WaitGroup
			wg.Add(2)
			tokAt := time.Duration(rng.IntN(500)) * time.Microsecond
			go func() {
				defer wg.Done()
				time.Sleep(tokAt)
				tok.Cancel()
			}()
			picks := make([]int, 40)
			for i := range picks {
				picks[i] = rng.IntN(n)
			}
			go func() {
				defer wg.Done()
				for _, i := range picks {
					if err := reqs[i].Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
						t.Errorf("Cancel: %v", err)
					}
				}
			}()
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Microsecond)
			portWithin(t, 20*time.Second, "Close", func() { require.NoError(t, r.Close()) })
			wg.Wait()

			seen := map[int]Completion{}
			var cs [64]Completion
			for {
				k, err := r.Reap(cs[:], time.Second)
				for _, c := range cs[:k] {
					i := c.User.(int)
					_, dup := seen[i]
					require.False(t, dup, "request %d completed twice", i)
					seen[i] = c
					if c.Op == OpOpenAt && c.Err == nil {
						unix.Close(c.N)
					}
				}
				if err != nil {
					require.ErrorIs(t, err, ErrClosed)
					break
				}
			}
			require.Len(t, seen, n, "every request completed")
			be := r.Backend().Backend
			got := make([]byte, size)
			for i, c := range seen {
				if c.Err != nil {
					assert.ErrorIs(t, c.Err, ErrCanceled, "request %d (%v)", i, c.Op)
					assert.Zero(t, c.N, "request %d", i)
				}
				if c.Op != OpWrite {
					continue
				}
				_, err := unix.Pread(fd, got, int64(i*size))
				require.NoError(t, err)
				switch {
				case c.Err == nil:
					require.Equal(t, size, c.N)
					assert.Equal(t, bytes.Repeat([]byte{byte(1 + i%250)}, size), got, "write %d reported done", i)
				case be == BackendPoll:
					assert.Equal(t, make([]byte, size), got, "write %d canceled, so never run", i)
				}
			}
		})
	}
}
