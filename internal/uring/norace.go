//go:build linux && !race

package uring

// Without the race detector the kernel's ordering needs no annotation (see
// race_unsafe.go).

func (r *Ring) raceRelease() {}

func (r *Ring) raceAcquire() {}
