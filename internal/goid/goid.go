// Package goid tells goroutines apart: it returns the calling goroutine's
// id, for the few places that must know whether a call comes from a
// goroutine they run (a Close or stop inside a callback that cannot wait
// for that callback to return).
package goid

import "runtime"

// ID returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 18 [running]:"): the runtime offers no other
// way. Ids are never reused while the process runs. It costs a stack
// trace's first line (about a microsecond), so callers take it on their
// rare paths: usb's Pump once per pump goroutine, once per interruption it
// calls and once per Close (Pump.inCallback); minidrv's hotplug watch
// once when it starts and once per stop. It returns 0 if the trace does
// not start as it has in every Go release: then no goroutine is taken for
// one running a callback (a call from a callback waits, as it would
// without this), and nothing panics on a cancel path.
func ID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id int64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + int64(c-'0')
	}
	return id
}
