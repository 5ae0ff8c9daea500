//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv18 File: misuse of File (nil ring, zero value, negative fd) and
// deadlines and Close racing pending reads and writes.

const adv18Hang = 20 * time.Second

// adv18OwnPipe returns a pipe whose read end the caller hands to a File
// (which owns it); the write end closes with the test.
func adv18OwnPipe(t *testing.T) (rd, wr int) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
	t.Cleanup(func() { unix.Close(p[1]) })
	return p[0], p[1]
}

// adv18FdOpen reports whether fd is open.
func adv18FdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// adv18Within runs fn and fails t when it has not returned within d.
func adv18Within(t *testing.T, d time.Duration, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		t.Errorf("%s: no return within %v", what, d)
		return false
	}
}

// A File with a nil ring, a zero File and a nil *File refuse every method
// with ErrInvalid, never panic, and leave the fd alone.
func TestAdv18FileNotMade(t *testing.T) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	buf := make([]byte, 4)
	var nilFile *File
	files := map[string]*File{
		"nilRing": NewFile(nil, p[0], "p"),
		"zero":    {},
		"nil":     nilFile,
		"zeroRing": func() *File {
			return NewFile(&Ring{}, p[0], "z")
		}(),
	}
	for name, f := range files {
		t.Run(name, func(t *testing.T) {
			calls := map[string]func() error{
				"Read":             func() error { _, err := f.Read(buf); return err },
				"ReadEmpty":        func() error { _, err := f.Read(nil); return err },
				"Write":            func() error { _, err := f.Write(buf); return err },
				"ReadContext":      func() error { _, err := f.ReadContext(context.Background(), buf); return err },
				"WriteContext":     func() error { _, err := f.WriteContext(context.Background(), buf); return err },
				"ReadAt":           func() error { _, err := f.ReadAt(buf, 0); return err },
				"WriteAt":          func() error { _, err := f.WriteAt(buf, 0); return err },
				"SetDeadline":      func() error { return f.SetDeadline(time.Now()) },
				"SetReadDeadline":  func() error { return f.SetReadDeadline(time.Now().Add(time.Hour)) },
				"SetWriteDeadline": func() error { return f.SetWriteDeadline(time.Time{}) },
				"Close":            func() error { return f.Close() },
			}
			for cn, call := range calls {
				var err error
				require.NotPanics(t, func() { err = call() }, cn)
				assert.ErrorIs(t, err, ErrInvalid, cn)
			}
			assert.True(t, adv18FdOpen(p[0]), "fd left open")
		})
	}
}

// A File on a negative fd: every read and write fails with an error (the
// same on both backends), Close reports it, nothing hangs or panics.
func TestAdv18FileNegativeFd(t *testing.T) {
	got := adv13Both(t, 8, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, fd := range []int{-1, -5} {
			f := NewFile(r, fd, "neg")
			buf := make([]byte, 8)
			res := func(what string, n int, err error) {
				assert.Error(t, err, what)
				assert.Zero(t, n, what)
				s := what + ": "
				switch {
				case errors.Is(err, ErrInvalid):
					s += "invalid"
				case errors.Is(err, unix.EBADF):
					s += "EBADF"
				default:
					s += "other " + err.Error()
				}
				out = append(out, s)
			}
			adv18Within(t, adv18Hang, "negative fd ops", func() {
				n, err := f.Read(buf)
				res("read", n, err)
				n, err = f.Write(buf)
				res("write", n, err)
				n, err = f.ReadAt(buf, 0)
				res("readat", n, err)
				n, err = f.WriteAt(buf, 0)
				res("writeat", n, err)
			})
			require.NoError(t, f.SetDeadline(time.Now().Add(time.Hour)))
			f.Close()
			assert.ErrorIs(t, f.Close(), os.ErrClosed, "second Close")
		}
		assertSettled(t, r)
		return out
	})
	adv13Agree(t, got)
}

// Pending reads on a pipe, with the read deadline moved back and forth by
// another goroutine, then set in the past: every read returns once, with
// data or a deadline error; after the deadline is cleared a read gets data.
func TestAdv18FileDeadlineChurn(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rd, wr := adv18OwnPipe(t)
		f := NewFile(r, rd, "pipe")
		const readers = 6
		var wg sync.WaitGroup
		var returned, deadlined atomic.Int32
		errs := make(chan error, readers*64)
		stop := make(chan struct{})
		for i := 0; i < readers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 16)
				for {
					select {
					case <-stop:
						return
					default:
					}
					_, err := f.Read(buf)
					returned.Add(1)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						deadlined.Add(1)
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		churn := time.Now().Add(300 * time.Millisecond)
		for i := 0; time.Now().Before(churn); i++ {
			var d time.Time
			switch i % 4 {
			case 0:
				d = time.Now().Add(time.Millisecond)
			case 1:
				d = time.Now().Add(-time.Second)
			case 2:
				d = time.Time{}
			case 3:
				d = time.Now().Add(time.Hour)
			}
			require.NoError(t, f.SetReadDeadline(d))
			if i%16 == 0 {
				unix.Write(wr, []byte("x"))
			}
			time.Sleep(200 * time.Microsecond)
		}
		close(stop)
		require.NoError(t, f.SetReadDeadline(time.Now().Add(-time.Second)))
		adv18Within(t, adv18Hang, "readers after a past deadline", wg.Wait)
		close(errs)
		for err := range errs {
			t.Errorf("read: unexpected error %v", err)
		}
		t.Logf("returns %d, deadline errors %d", returned.Load(), deadlined.Load())
		assert.Positive(t, deadlined.Load())

		// Cleared: a read blocks until data, then gets it.
		require.NoError(t, f.SetReadDeadline(time.Time{}))
		got := make(chan int, 1)
		go func() {
			buf := make([]byte, 64)
			n, err := f.Read(buf)
			assert.NoError(t, err)
			got <- n
		}()
		time.Sleep(20 * time.Millisecond)
		// drain what the churn left first, then write
		_, err := unix.Write(wr, []byte("y"))
		require.NoError(t, err)
		select {
		case n := <-got:
			assert.Positive(t, n)
		case <-time.After(adv18Hang):
			t.Fatal("read after the deadline was cleared did not complete")
		}
		require.NoError(t, f.Close())
		assertSettled(t, r)
	})
}

// A deadline moved later before it fires keeps a pending read pending;
// one moved earlier ends it with os.ErrDeadlineExceeded.
func TestAdv18FileDeadlineExtendShorten(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := adv18OwnPipe(t)
		f := NewFile(r, rd, "pipe")
		// Far enough that a loaded machine's pause before the extension
		// does not let it fire first; the wait below outlasts it.
		require.NoError(t, f.SetReadDeadline(time.Now().Add(600*time.Millisecond)))
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := f.Read(make([]byte, 4))
			done <- err
		}()
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, f.SetReadDeadline(time.Now().Add(time.Hour)))
		select {
		case err := <-done:
			t.Fatalf("read ended at %v though its deadline was extended: %v", time.Since(start), err)
		case <-time.After(900 * time.Millisecond): // past the first deadline
		}
		require.NoError(t, f.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
		select {
		case err := <-done:
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
			assert.ErrorIs(t, err, ErrTimeout)
		case <-time.After(adv18Hang):
			t.Fatal("read not ended by the shortened deadline")
		}
		// Writes are unaffected by the read deadline.
		wfd, err := unix.Dup(wr)
		require.NoError(t, err)
		wf := NewFile(r, wfd, "w")
		require.NoError(t, f.SetWriteDeadline(time.Now().Add(-time.Second)))
		n, err := wf.Write([]byte("ab"))
		assert.NoError(t, err)
		assert.Equal(t, 2, n)
		require.NoError(t, wf.Close())
		require.NoError(t, f.Close())
		assertSettled(t, r)
	})
}

// Close concurrent with pending reads and writes, deadline changes and
// other Closes: exactly one Close succeeds, every call returns once with
// os.ErrClosed or os.ErrDeadlineExceeded (or a result), the fd is closed.
func TestAdv18FileCloseRace(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for round := 0; round < 4; round++ {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			require.NoError(t, err)
			peer := p[1]
			f := NewFile(r, p[0], "sock")
			var wg sync.WaitGroup
			bad := make(chan error, 64)
			op := func(what string, fn func() (int, error)) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 1000; i++ {
						_, err := fn()
						switch {
						case err == nil:
							continue
						case errors.Is(err, os.ErrClosed):
							assert.ErrorIs(t, err, ErrClosed, what)
							return
						case errors.Is(err, os.ErrDeadlineExceeded):
							time.Sleep(time.Millisecond)
							continue
						default:
							bad <- err
							return
						}
					}
				}()
			}
			big := make([]byte, 1<<20)
			for i := 0; i < 3; i++ {
				op("read", func() (int, error) { return f.Read(make([]byte, 8)) })
				op("write", func() (int, error) { return f.Write(big) })
				op("readctx", func() (int, error) {
					ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
					defer cancel()
					return f.ReadContext(ctx, make([]byte, 8))
				})
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					var err error
					switch i % 3 {
					case 0:
						err = f.SetDeadline(time.Now().Add(2 * time.Millisecond))
					case 1:
						err = f.SetWriteDeadline(time.Time{})
					case 2:
						err = f.SetReadDeadline(time.Now().Add(-time.Millisecond))
					}
					if err != nil {
						assert.ErrorIs(t, err, os.ErrClosed, "set deadline")
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			time.Sleep(30 * time.Millisecond)
			var ok atomic.Int32
			var cw sync.WaitGroup
			for i := 0; i < 3; i++ {
				cw.Add(1)
				go func() {
					defer cw.Done()
					if err := f.Close(); err == nil {
						ok.Add(1)
					} else {
						assert.ErrorIs(t, err, os.ErrClosed)
					}
				}()
			}
			adv18Within(t, adv18Hang, "Close under pending I/O", cw.Wait)
			adv18Within(t, adv18Hang, "readers and writers after Close", wg.Wait)
			close(bad)
			for err := range bad {
				t.Errorf("round %d: unexpected error %v", round, err)
			}
			assert.Equal(t, int32(1), ok.Load(), "exactly one Close succeeds")
			unix.Close(peer)
		}
		assertSettled(t, r)
	})
}

// The ring closed under a File with pending reads: they end (not hang),
// and the File's Close still closes the fd once.
func TestAdv18FileRingClosedUnder(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := adv18OwnPipe(t)
		f := NewFile(r, rd, "pipe")
		done := make(chan error, 2)
		for i := 0; i < 2; i++ {
			go func() {
				_, err := f.Read(make([]byte, 4))
				done <- err
			}()
		}
		time.Sleep(20 * time.Millisecond)
		require.NoError(t, r.Close())
		for i := 0; i < 2; i++ {
			select {
			case err := <-done:
				assert.Error(t, err)
				t.Logf("read after ring Close: %v", err)
			case <-time.After(adv18Hang):
				t.Fatal("read pending over ring Close did not return")
			}
		}
		_, err := f.Read(make([]byte, 4))
		assert.ErrorIs(t, err, ErrClosed, "read on a closed ring")
		require.NoError(t, f.SetReadDeadline(time.Now().Add(time.Millisecond)))
		adv18Within(t, adv18Hang, "File.Close after ring Close", func() {
			assert.NoError(t, f.Close())
		})
		assert.False(t, adv18FdOpen(rd), "fd closed by File.Close")
	})
}

// A nil context and offsets at the edge of int64: an error (or EOF), never
// a panic or a hang, the same on both backends.
func TestAdv18FileNilCtxAndHugeOffsets(t *testing.T) {
	got := adv13Both(t, 8, func(t *testing.T, r *Ring) []string {
		fd, err := unix.Open(t.TempDir()+"/f", unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		require.NoError(t, err)
		f := NewFile(r, fd, "f")
		var out []string
		note := func(what string, n int, err error) {
			assert.Error(t, err, what)
			out = append(out, fmt.Sprintf("%s: n=%d invalid=%v eof=%v", what, n, errors.Is(err, ErrInvalid), errors.Is(err, io.EOF)))
		}
		adv18Within(t, adv18Hang, "edge calls", func() {
			require.NotPanics(t, func() {
				var nilCtx context.Context // a nil context on purpose
				n, err := f.ReadContext(nilCtx, make([]byte, 4))
				note("read nil ctx", n, err)
				n, err = f.WriteContext(nilCtx, make([]byte, 4))
				note("write nil ctx", n, err)
				n, err = f.ReadAt(make([]byte, 8), math.MaxInt64)
				note("readat max", n, err)
				n, err = f.ReadAt(make([]byte, 8), math.MaxInt64-3)
				note("readat max-3", n, err)
				n, err = f.WriteAt(make([]byte, 8), math.MaxInt64-3)
				note("writeat max-3", n, err)
			})
		})
		require.NoError(t, f.Close())
		assertSettled(t, r)
		return out
	})
	adv13Agree(t, got)
}
