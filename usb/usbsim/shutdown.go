//go:build !wasip1

package usbsim

import "syscall"

// errShutdown is the errno of a write to a socket whose peer shut it down
// (see MapError).
var errShutdown error = syscall.ESHUTDOWN
