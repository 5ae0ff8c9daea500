//go:build linux

package ioring_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"golang.org/x/sys/unix"
)

// A read waits on an empty pipe; canceling its token ends it at once, and
// its one completion says so.
func Example_cancel() {
	r, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()

	tok := r.NewToken() // one token can cover all of a device's I/O
	buf := make([]byte, 512)
	if _, err := r.Submit(ioring.Read(int(pr.Fd()), buf, -1).WithToken(tok).WithUser("status read")); err != nil {
		fmt.Println(err)
		return
	}
	tok.Cancel()

	var done [4]ioring.Completion
	n, _ := r.Reap(done[:], 5*time.Second)
	for _, c := range done[:n] {
		fmt.Println(c.User, "->", errors.Is(c.Err, ioring.ErrCanceled))
	}
	// Output: status read -> true
}

// A deadline is a cancel too: the completion carries ErrTimeout.
func Example_deadline() {
	r, err := ioring.New(ioring.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()

	q, _ := r.Start(ioring.Read(int(pr.Fd()), make([]byte, 64), -1).WithDeadline(10 * time.Millisecond))
	c, _ := q.Wait(context.Background())
	fmt.Println(c.Err, errors.Is(c.Err, ioring.ErrCanceled))
	// Output: ioring: deadline exceeded true
}

// A multishot receive takes a buffer of a BufRing per message: each
// completion marked More carries one (read it, give it back), and the
// final one, at the end of the stream here, carries none.
func ExampleRecvMultishot() {
	r, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()
	br, err := r.NewBufRing(8, 256) // 8 buffers of 256 bytes the kernel picks from
	if err != nil {
		fmt.Println(err)
		return
	}
	fds, _ := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])

	q, err := r.Submit(ioring.RecvMultishot(fds[0], br, 0))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, msg := range []string{"scan line 1", "scan line 2"} {
		unix.Write(fds[1], []byte(msg))
		c := reapOne(r)
		fmt.Printf("%q more=%v\n", br.Bytes(c), c.More)
		br.Release(c.BufID) // the kernel may fill it again
	}
	unix.Shutdown(fds[1], unix.SHUT_WR) // the end of the stream ends it
	c := reapOne(r)
	fmt.Println(c.Req == q, c.N, c.Err, "more =", c.More)
	// Output:
	// "scan line 1" more=true
	// "scan line 2" more=true
	// true 0 <nil> more = false
}

// reapOne returns the next completion.
func reapOne(r *ioring.Ring) ioring.Completion {
	var c [1]ioring.Completion
	r.Reap(c[:], 5*time.Second)
	return c[0]
}
