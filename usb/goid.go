package usb

import "runtime"

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 18 [running]:"): the runtime offers no other
// way. Ids are never reused while the process runs. It costs a stack
// trace's first line (about a microsecond): the Pump takes it once per
// pump goroutine, once per interruption it calls and once per Close, to
// tell a Close that runs inside one of its Runner's callbacks (see
// Pump.inCallback), which cannot wait for that callback to return, from
// one on any other goroutine, which must. It returns 0 if the trace does
// not start as it has in every Go release: then no goroutine is taken for
// one running a callback (a Close from a callback waits, as it did before
// the Pump could tell), and nothing panics on a cancel path.
func goid() int64 {
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
