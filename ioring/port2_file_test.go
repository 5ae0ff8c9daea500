//go:build linux

package ioring

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Second round, File: the io.Reader/io.ReaderAt contract as the standard
// library's iotest checks it, deadlines that move while reads are
// pending or fire as they are cleared, the two directions' deadlines
// apart, WriteContext's count after a cancel, and Close racing every
// other method.

// port2File returns a File on a duplicate of fd (the File owns it).
func port2File(t *testing.T, r *Ring, fd int, name string) *File {
	t.Helper()
	dup, err := unix.Dup(fd)
	require.NoError(t, err)
	unix.CloseOnExec(dup)
	f := NewFile(r, dup, name)
	t.Cleanup(func() { f.Close() })
	return f
}

// TestPort2FileReaderContract: testing/iotest's checks of Read and ReadAt
// on a File over a regular file, and of Read over a pipe.
func TestPort2FileReaderContract(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		content := make([]byte, 10000)
		for i := range content {
			content[i] = byte(i*31 + i/256)
		}
		f := port2File(t, r, tempFile(t, content), "content")
		_, err := unix.Seek(f.Fd(), 0, io.SeekStart)
		require.NoError(t, err)
		assert.NoError(t, iotest.TestReader(f, content))

		rd, wr := pipe(t)
		pf := port2File(t, r, rd, "pipe")
		go func() {
			for off := 0; off < len(content); off += 777 {
				unix.Write(wr, content[off:min(off+777, len(content))])
			}
			unix.Close(wr)
		}()
		got, err := io.ReadAll(iotest.OneByteReader(pf))
		assert.NoError(t, err)
		assert.Equal(t, content, got)
	})
}

// TestPort2FileDeadlineMoves: a deadline extended while a read is pending
// lets it go on and take the data; one moved into the past while a read
// is pending ends it at once; the write side's deadline is its own.
func TestPort2FileDeadlineMoves(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		f := port2File(t, r, a, "sock")
		type res struct {
			n   int
			err error
		}
		done := make(chan res, 1)
		buf := make([]byte, 8)
		// The extension must land before the first deadline, or the read
		// rightly times out; a loaded machine may not run the test for
		// longer than that. A try where it landed late says nothing: the
		// read is ended and the next try gives the first deadline twice as
		// long.
		var start time.Time
		first := 30 * time.Millisecond
		for ; ; first *= 2 {
			require.Less(t, first, 20*time.Second, "the extension never landed before the first deadline")
			// Nothing left in flight, so that the read counts alone.
			require.Eventually(t, func() bool { return r.InFlight() == 0 }, 10*time.Second, time.Millisecond)
			start = time.Now()
			require.NoError(t, f.SetReadDeadline(start.Add(first)))
			go func() {
				n, err := f.Read(buf)
				done <- res{n, err}
			}()
			// Pending: the read is in flight (or it ended already, the
			// deadline come before it).
			require.Eventually(t, func() bool { return r.InFlight() == 1 || len(done) > 0 }, 10*time.Second, 100*time.Microsecond)
			require.NoError(t, f.SetReadDeadline(time.Now().Add(time.Hour)))
			if time.Since(start) < first {
				break // in time: the read must go on
			}
			require.NoError(t, f.SetReadDeadline(time.Now().Add(-time.Second)))
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a deadline in the past did not end the pending read")
			}
		}
		time.Sleep(time.Until(start.Add(2 * first))) // past the first deadline
		_, err := unix.Write(b, []byte("late"))
		require.NoError(t, err)
		select {
		case got := <-done:
			assert.NoError(t, got.err, "the extended read")
			assert.Equal(t, "late", string(buf[:got.n]))
		case <-time.After(10 * time.Second):
			t.Fatal("the read did not end")
		}

		// Moved into the past while pending.
		go func() {
			n, err := f.Read(buf)
			done <- res{n, err}
		}()
		time.Sleep(5 * time.Millisecond)
		require.NoError(t, f.SetReadDeadline(time.Now().Add(-time.Second)))
		select {
		case got := <-done:
			assert.ErrorIs(t, got.err, os.ErrDeadlineExceeded)
		case <-time.After(10 * time.Second):
			t.Fatal("a deadline in the past did not end the pending read")
		}

		// Writes ignore the read deadline; reads the write deadline.
		n, err := f.Write([]byte("w"))
		assert.NoError(t, err, "write under a past read deadline")
		assert.Equal(t, 1, n)
		require.NoError(t, f.SetReadDeadline(time.Time{}))
		require.NoError(t, f.SetWriteDeadline(time.Now().Add(-time.Second)))
		_, err = f.Write([]byte("w"))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		_, err = unix.Write(b, []byte("r"))
		require.NoError(t, err)
		n, err = f.Read(buf)
		assert.NoError(t, err, "read under a past write deadline")
		assert.Equal(t, "r", string(buf[:n]))
	})
}

// TestPort2FileWriteContextCount: a large write into a pipe that its
// reader drains slowly, canceled by its context part-way: the count it
// returns is what the reader gets, no more and no less, and the error
// says context.Canceled; the File writes normally afterwards.
func TestPort2FileWriteContextCount(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		f := port2File(t, r, wr, "pipe")
		unix.Close(wr) // f holds the only write end
		data := make([]byte, 1<<20)
		for i := range data {
			data[i] = byte(i)
		}
		read := make(chan []byte, 1)
		go func() {
			var all []byte
			buf := make([]byte, 4096)
			for {
				n, err := unix.Read(rd, buf)
				if n <= 0 || err != nil {
					read <- all
					return
				}
				all = append(all, buf[:n]...)
				if len(all) < 200<<10 {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		n, err := f.WriteContext(ctx, data)
		if err == nil {
			t.Skip("the whole megabyte went through before the cancel")
		}
		assert.ErrorIs(t, err, context.Canceled)
		assert.Less(t, n, len(data))
		m, err := f.Write([]byte("tail"))
		assert.NoError(t, err)
		assert.Equal(t, 4, m)
		require.NoError(t, f.Close())
		var all []byte
		select {
		case all = <-read:
		case <-time.After(10 * time.Second):
			t.Fatal("the reader did not see the end")
		}
		require.Equal(t, n+4, len(all), "bytes the reader got vs the count WriteContext returned (+4)")
		assert.Equal(t, data[:n], all[:n])
		assert.Equal(t, "tail", string(all[n:]))
	})
}

// TestPort2FileCloseRacesEverything: goroutines that Read, Write,
// ReadAt, ReadContext, SetDeadline and Close one File at random moments:
// everything returns, exactly one Close succeeds, every error after the
// close matches os.ErrClosed (or a deadline), and the fd is closed once.
func TestPort2FileCloseRacesEverything(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		for round := range 8 {
			a, b := socketpair(t, unix.SOCK_STREAM)
			f := port2File(t, r, a, "sock")
			rng := rand.New(rand.NewPCG(uint64(round), 9))
			var closes atomic.Int32
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 6 {
				wg.Add(1)
				seed := rng.Uint64()
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(seed, uint64(g)))
					buf := make([]byte, 16)
					for {
						select {
						case <-stop:
							return
						default:
						}
						var err error
						switch rng.IntN(6) {
						case 0:
							_, err = f.Read(buf)
						case 1:
							_, err = f.Write(buf)
						case 2:
							_, err = f.ReadAt(buf, 0) // ESPIPE on a socket
						case 3:
							// Deadlines that never fire: one that fires makes the
							// next SetDeadline replace a token, which races every
							// other method (TestPort2FoundFileInvalidRacesSetDeadline).
							if rng.IntN(2) == 0 {
								err = f.SetDeadline(time.Now().Add(time.Hour))
							} else {
								err = f.SetDeadline(time.Time{})
							}
						case 4:
							ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(300))*time.Microsecond)
							_, err = f.ReadContext(ctx, buf)
							cancel()
						default:
							if f.Close() == nil {
								closes.Add(1)
							}
							return
						}
						if err != nil && errors.Is(err, os.ErrClosed) {
							return
						}
					}
				}()
			}
			// Keep the peer busy so reads find data now and then.
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					unix.SendmsgN(b, []byte("x"), nil, nil, unix.MSG_DONTWAIT)
					var sink [64]byte
					unix.Recvfrom(b, sink[:], unix.MSG_DONTWAIT)
					time.Sleep(100 * time.Microsecond)
				}
			}()
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
			if f.Close() == nil {
				closes.Add(1)
			}
			close(stop)
			portWithin(t, 10*time.Second, "the File's users", wg.Wait)
			assert.Equal(t, int32(1), closes.Load(), "round %d: successful Closes", round)
			_, err := f.Read(make([]byte, 1))
			assert.ErrorIs(t, err, os.ErrClosed)
			_, err = unix.FcntlInt(uintptr(f.Fd()), unix.F_GETFD, 0)
			assert.ErrorIs(t, err, unix.EBADF, "round %d: the File's fd is closed", round)
		}
		assertSettled(t, r)
	})
}

// TestPort2FileRingClosedUnder: the ring closes under a File with a read
// pending: the read ends, later calls fail with ErrClosed, and the File's
// Close still closes its fd.
func TestPort2FileRingClosedUnder(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		f := port2File(t, r, rd, "pipe")
		done := make(chan error, 1)
		go func() {
			_, err := f.Read(make([]byte, 8))
			done <- err
		}()
		time.Sleep(10 * time.Millisecond)
		portWithin(t, 10*time.Second, "Ring.Close", func() { assert.NoError(t, r.Close()) })
		select {
		case err := <-done:
			assert.ErrorIs(t, err, ErrCanceled, "the pending read")
		case <-time.After(10 * time.Second):
			t.Fatal("the pending read did not end")
		}
		_, err := f.Read(make([]byte, 8))
		assert.ErrorIs(t, err, ErrClosed)
		_, err = f.Write([]byte("x"))
		assert.ErrorIs(t, err, ErrClosed)
		assert.NoError(t, f.SetDeadline(time.Now().Add(time.Second)))
		fd := f.Fd()
		assert.NoError(t, f.Close(), "File.Close on a closed ring")
		_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		assert.ErrorIs(t, err, unix.EBADF, "the File's fd is closed")
	})
}

// TestPort2FileEndedContext: ReadContext and WriteContext with a context
// that has ended move nothing and say so.
func TestPort2FileEndedContext(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		_, err := unix.Write(wr, []byte("keep"))
		require.NoError(t, err)
		f := port2File(t, r, rd, "pipe")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		n, err := f.ReadContext(ctx, make([]byte, 8))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, errors.Is(err, io.EOF))
		buf := make([]byte, 8)
		n, err = f.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "keep", string(buf[:n]), "the ended context read nothing")

		wf := port2File(t, r, wr, "pipe-w")
		dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer dcancel()
		n, err = wf.WriteContext(dctx, []byte("never"))
		assert.Zero(t, n)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.True(t, pipeEmpty(t, rd), "the ended context wrote nothing")
	})
}
