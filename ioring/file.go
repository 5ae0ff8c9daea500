//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// File is an fd read and written through a Ring with the idioms of os.File
// and net.Conn: Read and Write (io.Reader, io.Writer, io.ReaderAt,
// io.WriterAt), ReadContext and WriteContext, deadlines, and a Close that
// cancels what is pending. A serial port, a character device or a socket
// wrapped in a File is canceled for real: every read and write is a ring
// request, which a deadline, a context or Close ends at once (on the poll
// backend, an operation already running on a worker delivers its result
// instead, see Ring's backends).
//
// Reads at the current position complete in the order they were issued,
// and so do writes (the ring's stream order), so several goroutines may
// read one File as they would an os.File.
//
// A File owns its fd: Close closes it. All methods are safe for concurrent
// use. Errors are *os.PathError values wrapping the ring's: a deadline
// gives one that matches os.ErrDeadlineExceeded (and ErrTimeout), a closed
// File one that matches os.ErrClosed (and ErrClosed). Closing the Ring
// under a File ends its pending calls with ErrCanceled (the ring's Close
// cancels them) and fails later ones with ErrClosed; the File still owns
// its fd, which its Close closes.
type File struct {
	r    *Ring
	fd   int
	name string

	mu     sync.Mutex // guards closed, refs and the directions
	idle   sync.Cond  // refs dropped to 0; L is &mu
	closed bool
	refs   int     // reads and writes in progress
	rd, wr fileDir // reads, writes
}

// fileDir is the state of one direction: the token its requests carry and
// its deadline, which cancels that token when it passes.
type fileDir struct {
	tok      *Token
	deadline time.Time
	timer    *time.Timer
}

// NewFile returns a File for fd on r; the File owns fd from now on. name is
// used in errors (as os.File's). fd should be open: its requests fail with
// EBADF otherwise. With a Ring that New did not make (nil or zero), every
// method of the File fails with an error wrapping ErrInvalid and leaves fd
// alone (Close does not close it), as does every method of a zero File.
func NewFile(r *Ring, fd int, name string) *File {
	f := &File{r: r, fd: fd, name: name}
	f.idle.L = &f.mu
	f.rd.tok, f.wr.tok = r.NewToken(), r.NewToken()
	return f
}

// Fd returns the file descriptor (-1 for a nil *File). It stays owned by
// the File.
func (f *File) Fd() int {
	if f == nil {
		return -1
	}
	return f.fd
}

// Name returns the name given to NewFile.
func (f *File) Name() string {
	if f == nil {
		return ""
	}
	return f.name
}

// invalid refuses op on a File that NewFile did not make (nil or zero), or
// made with a Ring that New did not make; otherwise it returns nil.
func (f *File) invalid(op string) error {
	// Only what NewFile set once is read here, without f.mu: the
	// directions' tokens change under it (setDeadline).
	if f != nil && f.r.made() {
		return nil
	}
	name := ""
	if f != nil {
		name = f.name
	}
	return &os.PathError{Op: op, Path: name, Err: errNoFile}
}

// errNoFile is the error of a File that NewFile did not make.
var errNoFile = fmt.Errorf("%w: File not made by NewFile with a Ring", ErrInvalid)

// Read reads up to len(p) bytes at the current position. At the end of the
// file (or stream) it returns 0, io.EOF.
func (f *File) Read(p []byte) (int, error) {
	return f.ReadContext(context.Background(), p)
}

// ReadContext is Read that ctx can cancel.
func (f *File) ReadContext(ctx context.Context, p []byte) (int, error) {
	if err := f.invalid("read"); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, f.check("read")
	}
	n, err := f.do(ctx, "read", &f.rd, Read(f.fd, p, -1))
	if n == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// ReadAt reads len(p) bytes at offset off; it returns an error (io.EOF at
// the end of the file) when it reads fewer.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if err := f.invalid("readat"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &os.PathError{Op: "readat", Path: f.name, Err: errors.New("negative offset")}
	}
	if len(p) == 0 { // as Read: no request, but a closed File still says so
		return 0, f.check("readat")
	}
	n := 0
	for n < len(p) {
		m, err := f.do(context.Background(), "readat", &f.rd, Read(f.fd, p[n:], off+int64(n)))
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
	}
	return n, nil
}

// Write writes all of p at the current position; it returns an error when
// it wrote fewer.
func (f *File) Write(p []byte) (int, error) {
	return f.WriteContext(context.Background(), p)
}

// WriteContext is Write that ctx can cancel; the count says how much was
// written before the cancel.
func (f *File) WriteContext(ctx context.Context, p []byte) (int, error) {
	if err := f.invalid("write"); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, f.check("write")
	}
	n := 0
	for n < len(p) {
		m, err := f.do(ctx, "write", &f.wr, Write(f.fd, p[n:], -1))
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, &os.PathError{Op: "write", Path: f.name, Err: io.ErrShortWrite}
		}
	}
	return n, nil
}

// WriteAt writes all of p at offset off.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if err := f.invalid("writeat"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &os.PathError{Op: "writeat", Path: f.name, Err: errors.New("negative offset")}
	}
	if len(p) == 0 { // as Read: no request, but a closed File still says so
		return 0, f.check("writeat")
	}
	n := 0
	for n < len(p) {
		m, err := f.do(context.Background(), "writeat", &f.wr, Write(f.fd, p[n:], off+int64(n)))
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, &os.PathError{Op: "writeat", Path: f.name, Err: io.ErrShortWrite}
		}
	}
	return n, nil
}

// SetDeadline sets the read and write deadlines (see SetReadDeadline).
func (f *File) SetDeadline(t time.Time) error {
	if err := f.SetReadDeadline(t); err != nil {
		return err
	}
	return f.SetWriteDeadline(t)
}

// SetReadDeadline sets when reads time out, pending ones included, as
// net.Conn's: a read pending at t, or issued after it, fails with an error
// matching os.ErrDeadlineExceeded. A zero t means no deadline. Setting a
// deadline in the past cancels the pending reads at once.
func (f *File) SetReadDeadline(t time.Time) error {
	if err := f.invalid("setreaddeadline"); err != nil {
		return err
	}
	return f.setDeadline("read", &f.rd, t)
}

// SetWriteDeadline sets when writes time out, as SetReadDeadline.
func (f *File) SetWriteDeadline(t time.Time) error {
	if err := f.invalid("setwritedeadline"); err != nil {
		return err
	}
	return f.setDeadline("write", &f.wr, t)
}

func (f *File) setDeadline(op string, d *fileDir, t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return &os.PathError{Op: "set" + op + "deadline", Path: f.name, Err: errFileClosed}
	}
	passed := false
	if d.timer != nil {
		// Stop reports false once the timer has fired: its function
		// cancels d.tok, now or a moment later (time.AfterFunc runs it on
		// a goroutine of its own), so d.tok is as good as canceled.
		passed = !d.timer.Stop()
		d.timer = nil
	}
	if passed || d.tok.Canceled() {
		// A deadline that passed canceled the token, or is about to; its
		// requests are ending. New ones get a fresh token (Reset would
		// wait for them).
		d.tok = f.r.NewToken()
	}
	d.deadline = t
	if t.IsZero() {
		return nil
	}
	tok := d.tok
	if until := time.Until(t); until > 0 {
		d.timer = time.AfterFunc(until, func() { tok.cancel(flCancelReq | flTimedOut) })
	} else {
		tok.cancel(flCancelReq | flTimedOut)
	}
	return nil
}

// Close cancels the pending reads and writes, waits for their completions
// (they fail with an error matching os.ErrClosed), and closes the fd.
// Later calls fail with os.ErrClosed.
func (f *File) Close() error {
	if err := f.invalid("close"); err != nil {
		return err
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return &os.PathError{Op: "close", Path: f.name, Err: errFileClosed}
	}
	f.closed = true
	for _, d := range []*fileDir{&f.rd, &f.wr} {
		if d.timer != nil {
			d.timer.Stop()
		}
		d.tok.Cancel()
	}
	for f.refs > 0 {
		f.idle.Wait()
	}
	f.mu.Unlock()
	if err := unix.Close(f.fd); err != nil {
		return &os.PathError{Op: "close", Path: f.name, Err: err}
	}
	return nil
}

// errFileClosed matches both os.ErrClosed and ErrClosed.
var errFileClosed = &joinedErr{msg: "file already closed", errs: []error{os.ErrClosed, ErrClosed}}

type joinedErr struct {
	msg  string
	errs []error
}

func (e *joinedErr) Error() string   { return e.msg }
func (e *joinedErr) Unwrap() []error { return e.errs }

// check returns the error of an operation on f with nothing to move.
func (f *File) check(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return &os.PathError{Op: op, Path: f.name, Err: errFileClosed}
	}
	return nil
}

// do runs op in direction d: with d's token, refused after Close or once
// d's deadline passed, and its cancel reported as the deadline's or
// Close's.
func (f *File) do(ctx context.Context, name string, d *fileDir, op Op) (int, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, &os.PathError{Op: name, Path: f.name, Err: errFileClosed}
	}
	if !d.deadline.IsZero() && !time.Now().Before(d.deadline) {
		f.mu.Unlock()
		return 0, &os.PathError{Op: name, Path: f.name, Err: ErrTimeout}
	}
	f.refs++
	tok := d.tok
	f.mu.Unlock()

	c, err := f.r.Do(ctx, op.WithToken(tok))
	if err == nil {
		err = c.Err
	}

	f.mu.Lock()
	if f.refs--; f.refs == 0 && f.closed {
		f.idle.Broadcast()
	}
	closed := f.closed
	f.mu.Unlock()
	if err == nil {
		return c.N, nil
	}
	if closed && errors.Is(err, ErrCanceled) && ctx.Err() == nil && !errors.Is(err, ErrTimeout) {
		err = errFileClosed
	}
	var ioe *IOError
	if errors.As(err, &ioe) {
		err = ioe.Err // the PathError names the op and file
	}
	return c.N, &os.PathError{Op: name, Path: f.name, Err: err}
}
