package ioring

import "sync/atomic"

// freeList holds the indices of free slots, linked through slot.freeNext.
// Links and heads store index+1, so that 0 ends a chain.
//
// It is two stacks, so that a request costs no atomic operation here and a
// batch of requests costs one or two:
//
//   - shared: any goroutine returns slots by pushing a whole chain of them
//     with one compare-and-swap (a reap pass returns all it delivered at
//     once);
//   - local: only the submitter (Ring.sqMu held) takes slots, from a private
//     chain; when that runs dry it takes the whole shared stack with one
//     swap.
//
// Pushing chains and taking everything at once has no ABA problem: nobody
// ever pops one entry off shared. The links need no atomics either: a chain
// is written only by its owner (a releaser before the CAS that publishes
// it) and read only by the next owner (the submitter after the swap that
// takes it), so the CAS and the swap order every access.
type freeList struct {
	shared atomic.Uint32 // head of the shared stack (index+1, 0: empty)
	local  uint32        // head of the submitter's chain; guarded by Ring.sqMu
}

// chain is a private list of freed slots (index+1, 0: empty), built by one
// goroutine and handed to the free list in one push.
type chain struct {
	head, tail uint32
}

// addFree puts slot idx (s), which nobody else references any more, on c.
func addFree(c *chain, idx uint32, s *slot) {
	s.freeNext = c.head
	c.head = idx + 1
	if c.tail == 0 {
		c.tail = idx + 1
	}
}

// pushFree hands chain c to the free list and empties c. Any goroutine.
func (r *Ring) pushFree(c *chain) {
	if c.head == 0 {
		return
	}
	last := &r.slots[c.tail-1]
	for {
		old := r.free.shared.Load()
		last.freeNext = old // last is still ours: only the CAS publishes it
		if r.free.shared.CompareAndSwap(old, c.head) {
			break
		}
	}
	*c = chain{}
}

// popFree takes a free slot: its index and address. r.sqMu held.
func (r *Ring) popFree() (uint32, *slot) {
	f := &r.free
	if f.local == 0 {
		if f.local = f.shared.Swap(0); f.local == 0 {
			return 0, nil
		}
	}
	idx := f.local - 1
	s := &r.slots[idx]
	f.local = s.freeNext
	return idx, s
}
