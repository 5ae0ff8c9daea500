//go:build linux

package ioring

import (
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Second round, the operations the poll backend runs on its workers
// (OpenAt, Close, Statx, Fsync, reads of regular files), in bursts larger
// than its pool, canceled at random moments. A completion that says
// ErrCanceled must mean the operation did not happen: an open canceled
// leaves no fd behind (forEachBackend's fd check sees it), a close
// canceled leaves the fd open; one that reports its result did it.
// (liburing's open-close, statx, fsync and io-cancel tests.)

func TestPort2WorkerOpsCanceledAtRandom(t *testing.T) {
	forEachBackend(t, 128, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		rng := rand.New(rand.NewPCG(31, 32))
		data := []byte("worker data")
		for round := range 6 {
			type job struct {
				q    Request
				kind string
				fd   int // the fd a Close closes; the fd of an Fsync
				ino  uint64
				st   *unix.Statx_t
				buf  []byte
			}
			var jobs []job
			// fds to close through the ring, and files to fsync and read.
			for i := range 24 {
				name := filepath.Join(dir, "f"+strconv.Itoa(round)+"-"+strconv.Itoa(i))
				var op Op
				j := job{fd: -1}
				switch i % 5 {
				case 0:
					op, j.kind = OpenAt(unix.AT_FDCWD, name, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600), "open"
				case 1:
					fd, err := unix.Open(name, unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
					require.NoError(t, err)
					var st unix.Stat_t
					require.NoError(t, unix.Fstat(fd, &st))
					op, j.kind, j.fd, j.ino = Close(fd), "close", fd, st.Ino
				case 2:
					j.st = new(unix.Statx_t)
					op, j.kind = Statx(unix.AT_FDCWD, dir, 0, unix.STATX_TYPE, j.st), "statx"
				case 3:
					fd := tempFile(t, data)
					op, j.kind, j.fd = Fsync(fd), "fsync", fd
				default:
					fd := tempFile(t, data)
					j.buf = make([]byte, len(data))
					op, j.kind = Read(fd, j.buf, 0), "read"
				}
				q, err := r.Submit(op.WithUser(i))
				require.NoError(t, err)
				j.q = q
				jobs = append(jobs, j)
			}
			// Cancel about half, at random moments, by every means.
			tok := make([]Request, 0, len(jobs))
			for _, j := range jobs {
				if rng.IntN(2) == 0 {
					tok = append(tok, j.q)
				}
			}
			for k, q := range tok {
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(100)) * time.Microsecond)
				}
				if k%2 == 0 {
					q.Cancel()
				} else {
					r.Cancel(q)
				}
			}
			byUser := map[any]Completion{}
			for range jobs {
				c := reapOne(t, r)
				_, dup := byUser[c.User]
				require.False(t, dup, "a second completion of %v", c.User)
				byUser[c.User] = c
			}
			for i, j := range jobs {
				c := byUser[i]
				canceled := c.Err != nil && isCancel(c.Err)
				if canceled {
					assert.ErrorIs(t, c.Err, ErrCanceled, "%s %d", j.kind, i)
				}
				switch j.kind {
				case "open":
					if !canceled {
						require.NoError(t, c.Err, "open %d", i)
						require.GreaterOrEqual(t, c.N, 0)
						unix.Close(c.N)
					} else {
						assert.Zero(t, c.N, "a canceled open reports no fd")
					}
				case "close":
					// The fd number may have gone to an open of this round
					// meanwhile: the file's inode says whose it is.
					var st unix.Stat_t
					open := unix.Fstat(j.fd, &st) == nil && st.Ino == j.ino
					if canceled {
						assert.True(t, open, "close %d canceled: the fd must still be open", i)
						if open {
							unix.Close(j.fd)
						}
					} else {
						assert.NoError(t, c.Err, "close %d", i)
						assert.False(t, open, "close %d done: the fd must be closed", i)
					}
				case "statx":
					if !canceled {
						require.NoError(t, c.Err)
						assert.Equal(t, uint16(unix.S_IFDIR), j.st.Mode&unix.S_IFMT)
					}
				case "fsync":
					if !canceled {
						assert.NoError(t, c.Err)
					}
				case "read":
					if !canceled {
						require.NoError(t, c.Err)
						assert.Equal(t, string(data), string(j.buf[:c.N]))
					}
				}
			}
			assertNoMore(t, r)
		}
		assertSettled(t, r)
	})
}

// TestPort2WorkerCloseRingWithQueue: Close of a ring with a burst of
// worker operations queued (more than the poll backend's pool): it
// drains every one (each completes once, canceled or done) and returns;
// opens that ran are reported, so their fds can be closed.
func TestPort2WorkerCloseRingWithQueue(t *testing.T) {
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		const n = 200
		for i := range n {
			var op Op
			if i%2 == 0 {
				op = OpenAt(unix.AT_FDCWD, filepath.Join(dir, "g"+strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
			} else {
				op = Statx(unix.AT_FDCWD, dir, 0, unix.STATX_SIZE, new(unix.Statx_t))
			}
			_, err := r.Submit(op.WithUser(i))
			require.NoError(t, err)
		}
		portWithin(t, 10*time.Second, "Close", func() { require.NoError(t, r.Close()) })
		seen := map[any]int{}
		for {
			var cs [32]Completion
			k, err := r.Reap(cs[:], time.Second)
			for _, c := range cs[:k] {
				seen[c.User]++
				if c.Err == nil && c.Op == OpOpenAt {
					unix.Close(c.N)
				} else if c.Err != nil {
					assert.ErrorIs(t, c.Err, ErrCanceled)
				}
			}
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed)
				break
			}
		}
		assert.Len(t, seen, n)
		for u, k := range seen {
			assert.Equal(t, 1, k, "completions of %v", u)
		}
	})
}
