//go:build linux

package ioring_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cancelio/cancelio/ioring"
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
