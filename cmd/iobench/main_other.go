//go:build !linux

package main

import (
	"fmt"
	"io"
	"os"
)

// run reports that iobench needs Linux: the engine runs on io_uring or epoll.
func run(_ []string, _, stderr io.Writer, _ <-chan os.Signal) int {
	fmt.Fprintln(stderr, "iobench: Linux only")
	return 1
}
