package proto

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// qemuExit models isa-debug-exit: exit((value << 1) | 1), truncated to 8 bits
// by the exit status.
func qemuExit(value byte) int { return (int(value)<<1 | 1) & 0xff }

func TestStatusRoundTrip(t *testing.T) {
	for status := 0; status <= MaxStatus; status++ {
		got, ok := DecodeExit(qemuExit(EncodeStatus(status)))
		assert.True(t, ok, "status %d", status)
		assert.Equal(t, status, got)
	}
}

func TestStatusClamp(t *testing.T) {
	for _, status := range []int{-1, MaxStatus + 1, 255, 1000} {
		got, ok := DecodeExit(qemuExit(EncodeStatus(status)))
		assert.True(t, ok)
		assert.Equal(t, MaxStatus, got, "status %d", status)
	}
}

func TestDecodeNoStatus(t *testing.T) {
	// 0: the guest powered off or rebooted (kernel panic); 1: QEMU's own
	// error; even codes: not from isa-debug-exit; -1: killed by a signal.
	for _, code := range []int{-1, 0, 1, 2, 4, 254, 256} {
		_, ok := DecodeExit(code)
		assert.False(t, ok, "QEMU exit code %d carries no status", code)
	}
}
