//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "usbvm-setup: Linux only")
	os.Exit(1)
}
