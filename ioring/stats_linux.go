//go:build linux

package ioring

// backendStats adds the backend's own counters to st.
func (r *Ring) backendStats(st *Stats) {
	b, ok := r.be.(*uringBackend)
	if !ok {
		return
	}
	st.KernelEnters = b.kernelEnters()
	// The kernel's counter lives in the ring's memory, which Close unmaps
	// after it set beDead under sqMu: read it under sqMu, and keep the
	// last value for after.
	r.sqMu.Lock()
	if !r.beDead {
		r.stats.cqOverflows.Store(uint64(b.ring.CQOverflows()))
	}
	r.unlockSQ()
	st.CQOverflows = r.stats.cqOverflows.Load()
}
