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
// pipe with blocking write(2); or, over a socket, reads and writes its end
// of a connected stream socket the same way. It is the same for every impl,
// so only the impl's side of the round trip differs.
type Echo struct {
	// PingFD is the write end of the pipe Echo reads: the runner writes
	// here. Over a socket, the runner's end of the connection.
	PingFD int
	// PongFD is the read end of the pipe Echo writes: the runner reads
	// here. Over a socket, PingFD again.
	PongFD int

	pingR, pongW int // the peer's ends; the same socket over a socket
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

// Transports of the ping-pong: two pipes, or a connected stream socket.
const (
	TransportPipe = "pipe" // two pipes (StartEcho)
	TransportUnix = "unix" // an AF_UNIX SOCK_STREAM socketpair
	TransportTCP  = "tcp"  // TCP over IPv4 loopback, TCP_NODELAY on both ends
)

// StartSockEcho starts an echo peer at the far end of a new connected stream
// socket: transport is TransportUnix or TransportTCP. Both ends are blocking
// and close-on-exec.
func StartSockEcho(transport string, maxMsg int) (*Echo, error) {
	var cl, srv int
	var err error
	switch transport {
	case TransportUnix:
		var fds [2]int
		fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		cl, srv = fds[0], fds[1]
	case TransportTCP:
		cl, srv, err = tcpLoopback()
	default:
		err = fmt.Errorf("transport %q", transport)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: %s socket: %w", transport, err)
	}
	e := &Echo{PingFD: cl, PongFD: cl, pingR: srv, pongW: srv, done: make(chan error, 1)}
	go e.loop(make([]byte, maxMsg))
	return e, nil
}

// tcpLoopback returns the two ends of a TCP connection over 127.0.0.1,
// with TCP_NODELAY (a 64-byte message goes out at once, as a request of a
// protocol would).
func tcpLoopback() (cl, srv int, err error) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, -1, err
	}
	if err := unix.Listen(ln, 1); err != nil {
		return -1, -1, err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return -1, -1, err
	}
	if cl, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return -1, -1, err
	}
	for err = unix.Connect(cl, sa); err == unix.EINTR; { // a loopback connect completes in the backlog
		err = unix.Connect(cl, sa)
	}
	if err == nil {
		for srv, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC); err == unix.EINTR; {
			srv, _, err = unix.Accept4(ln, unix.SOCK_CLOEXEC)
		}
	}
	if err != nil {
		unix.Close(cl)
		return -1, -1, err
	}
	for _, fd := range []int{cl, srv} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(cl)
			unix.Close(srv)
			return -1, -1, fmt.Errorf("TCP_NODELAY: %w", err)
		}
	}
	return cl, srv, nil
}

func (e *Echo) loop(buf []byte) {
	err := func() error {
		for {
			n, err := unix.Read(e.pingR, buf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.ECONNRESET && e.pingR == e.pongW {
				return nil // the runner closed its socket with an echo unread (a failed run)
			}
			if err != nil {
				return fmt.Errorf("bench: echo read: %w", err)
			}
			if n == 0 {
				return nil // Close closed the ping pipe's write end, or the runner's socket
			}
			for w := 0; w < n; {
				m, err := unix.Write(e.pongW, buf[w:n])
				if err == unix.EINTR {
					continue
				}
				if (err == unix.EPIPE || err == unix.ECONNRESET) && e.pingR == e.pongW {
					return nil // the runner closed its socket before this echo (a failed run)
				}
				if err != nil {
					return fmt.Errorf("bench: echo write: %w", err)
				}
				w += m
			}
		}
	}()
	unix.Close(e.pingR)
	if e.pongW != e.pingR {
		unix.Close(e.pongW)
	}
	e.done <- err
}

// Close stops the peer and closes every end. Runners that dup'ed PingFD must
// have closed their dups first: the peer stops when it reads end-of-file.
func (e *Echo) Close() error {
	if e.PongFD == e.PingFD { // a socket: one end, and the peer sees its close as end-of-file
		return errors.Join(unix.Close(e.PingFD), e.wait())
	}
	return errors.Join(unix.Close(e.PingFD), e.wait(), unix.Close(e.PongFD))
}

// wait waits for the peer to stop.
func (e *Echo) wait() error {
	select {
	case err := <-e.done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("bench: echo peer did not stop: is a dup of PingFD still open?")
	}
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
