//go:build linux

package ioring_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"golang.org/x/sys/unix"
)

// A pseudo-terminal read as a cancelable io.Reader: a deadline and a
// context end a read that waits for input, and input that arrives is read
// as from an os.File.
func ExampleFile() {
	r, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	master, slave, err := openPTY()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer slave.Close()
	f := ioring.NewFile(r, master, "/dev/ptmx") // f owns master now
	defer f.Close()

	var rd io.Reader = f
	buf := make([]byte, 64)

	// Nothing typed yet: the deadline ends the read.
	f.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = rd.Read(buf)
	fmt.Println("deadline:", errors.Is(err, os.ErrDeadlineExceeded))
	f.SetReadDeadline(time.Time{})

	// A context canceled by another goroutine ends it too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = f.ReadContext(ctx, buf)
	fmt.Println("canceled:", errors.Is(err, context.Canceled))

	// Output from the terminal's side arrives (the line discipline turns
	// "\n" into "\r\n").
	slave.Write([]byte("hello\n"))
	n, err := rd.Read(buf)
	fmt.Printf("%q %v\n", buf[:n], err)
	// Output:
	// deadline: true
	// canceled: true
	// "hello\r\n" <nil>
}

// openPTY opens a pseudo-terminal: the master's fd and the slave as a file.
func openPTY() (int, *os.File, error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return -1, nil, err
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		unix.Close(m)
		return -1, nil, err
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		unix.Close(m)
		return -1, nil, err
	}
	return m, s, nil
}

// A file read in chunks through one Op, re-aimed at each chunk with
// SetOffset instead of built anew for every read.
func ExampleOp_SetOffset() {
	r, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	f, err := os.CreateTemp("", "chunks")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	f.WriteString("one two six ")

	buf := make([]byte, 4)
	op := ioring.Read(int(f.Fd()), buf, 0)
	for off := int64(0); off < 12; off += 4 {
		op.SetOffset(off)
		c, err := r.Do(context.Background(), op)
		if err != nil || c.Err != nil {
			fmt.Println(err, c.Err)
			return
		}
		fmt.Printf("%d: %q\n", off, buf[:c.N])
	}
	// Output:
	// 0: "one "
	// 4: "two "
	// 8: "six "
}

// A loop that keeps reads in flight: each turn submits what is ready and
// reaps in one call, as liburing's io_uring_submit_and_wait does.
func ExampleRing_SubmitAndReap() {
	r, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	f, err := os.CreateTemp("", "blocks")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	f.WriteString("one two six ten ")

	bufs := [4][]byte{make([]byte, 4), make([]byte, 4), make([]byte, 4), make([]byte, 4)}
	var ops []ioring.Op
	for i := range bufs {
		ops = append(ops, ioring.Read(int(f.Fd()), bufs[i], int64(i)*4).WithUser(i))
	}
	reqs := make([]ioring.Request, len(ops))
	var done [4]ioring.Completion
	total := 0
	_, n, err := r.SubmitAndReap(ops, reqs, done[:], 5*time.Second)
	for err == nil {
		for _, c := range done[:n] {
			total += c.N
		}
		if total == 16 {
			break
		}
		n, err = r.Reap(done[:], 5*time.Second) // the rest
	}
	fmt.Println(total, err, string(bufs[3]))
	// Output: 16 <nil> ten
}
