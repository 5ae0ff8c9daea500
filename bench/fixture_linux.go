package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The data file's pattern: every 8-byte little-endian word holds its own
// file offset, so a block read from the wrong place (or not at all) is caught.

// WriteDataFile creates path with size bytes of the data pattern (size is
// rounded down to a multiple of 8), reads it back once so it sits in the page
// cache, and returns it opened read-only.
func WriteDataFile(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		n := min(int64(len(chunk)), size-off) &^ 7
		for i := int64(0); i < n; i += 8 {
			binary.LittleEndian.PutUint64(chunk[i:], uint64(off+i))
		}
		if _, err := f.Write(chunk[:n]); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, err
	}
	_ = unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_WILLNEED)
	for off := int64(0); off < size; off += int64(len(chunk)) { // warm the page cache
		if _, err := f.ReadAt(chunk, off); err != nil && off+int64(len(chunk)) < size {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

// CheckBlock reports whether buf holds the data pattern for file offset off
// (a multiple of 8); the error says where it does not.
func CheckBlock(buf []byte, off int64) error {
	for i := 0; i+8 <= len(buf); i += 8 {
		if got, want := binary.LittleEndian.Uint64(buf[i:]), uint64(off)+uint64(i); got != want {
			return fmt.Errorf("bench: block at offset %d: word %d holds %#x, want %#x", off, i/8, got, want)
		}
	}
	return nil
}

// RandomOffsets returns n offsets of blockSize-aligned blocks inside a file
// of size bytes, in an order fixed by seed.
func RandomOffsets(size int64, blockSize, n int, seed uint64) []int64 {
	blocks := size / int64(blockSize)
	rng := rand.New(rand.NewPCG(seed, 0x63616e63656c696f)) // "cancelio"
	out := make([]int64, n)
	for i := range out {
		out[i] = rng.Int64N(blocks) * int64(blockSize)
	}
	return out
}

// FillMessage writes the ping-pong message number seq into msg: seq in the
// first 8 bytes (so a stale echo is caught), a fixed pattern after.
func FillMessage(msg []byte, seq uint64) {
	for i := range msg {
		msg[i] = byte(i*7 + 1)
	}
	if len(msg) >= 8 {
		binary.LittleEndian.PutUint64(msg, seq)
	}
}

// Pipes is a set of pipes; R[i] and W[i] are the ends of pipe i, blocking
// and close-on-exec.
type Pipes struct {
	R, W []int
}

// NewPipes creates n pipes.
func NewPipes(n int) (*Pipes, error) {
	p := &Pipes{}
	for range n {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			p.Close()
			return nil, fmt.Errorf("bench: pipe2: %w", err)
		}
		p.R, p.W = append(p.R, fds[0]), append(p.W, fds[1])
	}
	return p, nil
}

// Close closes every end.
func (p *Pipes) Close() error {
	var errs []error
	for _, fd := range append(p.R, p.W...) {
		errs = append(errs, unix.Close(fd))
	}
	p.R, p.W = nil, nil
	return errors.Join(errs...)
}

// Echo is the ping-pong peer every impl talks to: a goroutine that reads
// from the ping pipe with blocking read(2) and writes what it got to the pong
// pipe with blocking write(2). It is the same for every impl, so only the
// impl's side of the round trip differs.
type Echo struct {
	// PingFD is the write end of the pipe Echo reads: the runner writes here.
	PingFD int
	// PongFD is the read end of the pipe Echo writes: the runner reads here.
	PongFD int

	pingR, pongW int
	done         chan error
}

// StartEcho starts an echo peer that reads at most maxMsg bytes at a time.
func StartEcho(maxMsg int) (*Echo, error) {
	p, err := NewPipes(2)
	if err != nil {
		return nil, err
	}
	e := &Echo{PingFD: p.W[0], PongFD: p.R[1], pingR: p.R[0], pongW: p.W[1], done: make(chan error, 1)}
	go e.loop(make([]byte, maxMsg))
	return e, nil
}

func (e *Echo) loop(buf []byte) {
	err := func() error {
		for {
			n, err := unix.Read(e.pingR, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("bench: echo read: %w", err)
			}
			if n == 0 {
				return nil // Close closed the ping pipe's write end
			}
			for w := 0; w < n; {
				m, err := unix.Write(e.pongW, buf[w:n])
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return fmt.Errorf("bench: echo write: %w", err)
				}
				w += m
			}
		}
	}()
	unix.Close(e.pingR)
	unix.Close(e.pongW)
	e.done <- err
}

// Close stops the peer and closes every end. Runners that dup'ed PingFD must
// have closed their dups first: the peer stops when it reads end-of-file.
func (e *Echo) Close() error {
	err := unix.Close(e.PingFD)
	select {
	case err2 := <-e.done:
		err = errors.Join(err, err2)
	case <-time.After(10 * time.Second):
		err = errors.Join(err, errors.New("bench: echo peer did not stop: is a dup of PingFD still open?"))
	}
	return errors.Join(err, unix.Close(e.PongFD))
}

// TempDataFile creates a data file of size bytes in a new temporary
// directory; cleanup closes and removes both.
func TempDataFile(size int64) (f *os.File, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "cancelio-bench-")
	if err != nil {
		return nil, nil, err
	}
	f, err = WriteDataFile(filepath.Join(dir, "data"), size)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return f, func() { f.Close(); os.RemoveAll(dir) }, nil
}
