package bench

// readSlots is the bookkeeping of a loop that keeps QD reads in flight, one
// buffer each (the cancelio and raw-go read runners): which buffers are
// idle, which offset each busy one is reading, and the next of the
// offsets, walked round-robin across Run calls.
type readSlots struct {
	bufs    [][]byte // QD buffers of BlockSize bytes, cut from one allocation
	off     []int64  // off[i]: the offset being read into bufs[i]
	free    []int    // idle buffers
	offsets []int64
	pos     int // next index into offsets
}

func newReadSlots(cfg ReadConfig) readSlots {
	s := readSlots{bufs: carveBuffers(cfg.QD, cfg.BlockSize), off: make([]int64, cfg.QD), free: make([]int, 0, cfg.QD), offsets: cfg.Offsets}
	for i := range s.bufs {
		s.free = append(s.free, cfg.QD-1-i) // taken from the end: buffer 0 first
	}
	return s
}

// carveBuffers returns n buffers of size bytes, cut from one allocation;
// each one's capacity ends where the next begins.
func carveBuffers(n, size int) [][]byte {
	bufs := make([][]byte, n)
	mem := make([]byte, n*size)
	for i := range bufs {
		bufs[i] = mem[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}

// idle reports whether a buffer is idle.
func (s *readSlots) idle() bool { return len(s.free) > 0 }

// take marks an idle buffer busy reading the next offset and returns both.
// Call it only when idle.
func (s *readSlots) take() (slot int, off int64) {
	slot = s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	off = s.offsets[s.pos]
	if s.pos++; s.pos == len(s.offsets) {
		s.pos = 0
	}
	s.off[slot] = off
	return slot, off
}

// put makes buffer slot idle again.
func (s *readSlots) put(slot int) { s.free = append(s.free, slot) }
