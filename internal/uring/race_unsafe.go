//go:build linux && race

package uring

import (
	"runtime"
	"unsafe"
)

// The kernel completes an SQE only after the store of the SQ tail that
// published it, and the caller reads the CQE only after loading the CQ
// tail, so whatever the submitter wrote before publishing happens before
// whatever the reaper does after peeking. The race detector cannot see
// through the kernel: these tell it, naming the ordering by the Ring's
// address (all CQEs acquire all earlier submissions, a harmless
// over-approximation).

func (r *Ring) raceRelease() { runtime.RaceReleaseMerge(unsafe.Pointer(r)) }

func (r *Ring) raceAcquire() { runtime.RaceAcquire(unsafe.Pointer(r)) }
