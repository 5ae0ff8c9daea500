package usbsim

import "syscall"

// errShutdown stands in for ESHUTDOWN, which WASI does not define (see
// MapError); no socket of the simulator exists there in any case.
var errShutdown error = syscall.ENOTCONN
