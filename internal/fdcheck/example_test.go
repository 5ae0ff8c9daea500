//go:build linux

package fdcheck_test

import (
	"fmt"
	"os"

	"github.com/cancelio/cancelio/internal/fdcheck"
)

// A pipe opened after the snapshot shows up as two fds left open until
// both ends are closed.
func Example() {
	before, err := fdcheck.Take()
	if err != nil {
		fmt.Println(err)
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Println(err)
		return
	}
	left, _ := fdcheck.Opened(before)
	fmt.Println(len(left), "left open")
	r.Close()
	w.Close()
	left, _ = fdcheck.Opened(before)
	fmt.Println(len(left), "left open")
	// Output:
	// 2 left open
	// 0 left open
}
