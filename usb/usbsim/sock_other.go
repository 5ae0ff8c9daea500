//go:build !linux

package usbsim

import (
	"fmt"
	"net"
)

// errNotSupported: the simulator needs Linux SOCK_SEQPACKET socketpairs.
var errNotSupported = fmt.Errorf("usbsim: socketpair endpoints need Linux SOCK_SEQPACKET: %w", ErrNotSupported)

func socketPair(int) (int, *net.UnixConn, int, error) { return -1, nil, 0, errNotSupported }

func setConnSendBuffer(*net.UnixConn, int) {}

func drainFD(int) {}

func closeFD(int) {}

const msgTrunc = 0

func sendNow(int, []byte) (bool, error) { return false, errNotSupported }

func peerClosed(*net.UnixConn) bool { return true }
