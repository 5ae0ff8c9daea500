// Package cq is a bounded, lock-free, multi-producer multi-consumer queue of
// uint32 values with per-cell sequence numbers, after Dmitry Vyukov's bounded
// MPMC queue. cancelio uses it for completion queues (slot indices of
// completed requests).
//
// Push and Pop never block and never allocate. Blocking, parking and wake-up
// policy belong to the caller.
package cq

import (
	"errors"
	"runtime"
	"sync/atomic"

	"github.com/cancelio/cancelio/internal/release"
)

// cacheLine separates the producer and consumer counters so that they do not
// share a cache line.
const cacheLine = 64

type cell struct {
	seq atomic.Uint64
	val uint32
}

// Queue is a bounded MPMC queue. The zero value is not usable; call New.
type Queue struct {
	_     [cacheLine]byte
	enq   atomic.Uint64
	_     [cacheLine - 8]byte
	deq   atomic.Uint64
	_     [cacheLine - 8]byte
	mask  uint64
	cells []cell
}

// ErrSize is returned by New for a capacity that is not a power of two >= 2.
var ErrSize = errors.New("cq: capacity must be a power of two >= 2")

// New returns a queue holding up to capacity values.
func New(capacity int) (*Queue, error) {
	if capacity < 2 || capacity&(capacity-1) != 0 {
		return nil, ErrSize
	}
	q := &Queue{mask: uint64(capacity - 1), cells: make([]cell, capacity)}
	for i := range q.cells {
		q.cells[i].seq.Store(uint64(i))
	}
	return q, nil
}

// Cap returns the queue's capacity.
func (q *Queue) Cap() int { return len(q.cells) }

// Len returns the number of values in the queue at some moment during the
// call; with concurrent pushes and pops it is only an estimate.
func (q *Queue) Len() int {
	d := q.deq.Load()
	e := q.enq.Load()
	if e < d {
		return 0
	}
	return int(e - d)
}

// Push adds v and reports whether there was room. It may report false for
// a moment while a concurrent Pop of the previous lap's value in the same
// cell has not finished, even though the queue is not full (see PushWait).
func (q *Queue) Push(v uint32) bool {
	pos := q.enq.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch dif := int64(seq - pos); {
		case dif == 0:
			if q.enq.CompareAndSwap(pos, pos+1) {
				c.val = v
				release.AtomicUint64(&c.seq, pos+1) // release the value to the consumer of this cell
				return true
			}
			pos = q.enq.Load()
		case dif < 0:
			return false // full: the cell still holds a value from one lap ago
		default:
			pos = q.enq.Load()
		}
	}
}

// PushWait adds v, waiting while the queue looks full. Use it only where the
// caller knows there is room (more cells than values in circulation): a
// push can still fail for a moment when a consumer has claimed the cell of
// the previous lap but not yet released it, and must not be dropped then.
func (q *Queue) PushWait(v uint32) {
	for spins := 0; !q.Push(v); spins++ {
		if spins < 64 {
			continue
		}
		runtime.Gosched()
	}
}

// Pop removes the oldest value and reports whether there was one.
func (q *Queue) Pop() (uint32, bool) {
	pos := q.deq.Load()
	for {
		c := &q.cells[pos&q.mask]
		seq := c.seq.Load()
		switch dif := int64(seq - (pos + 1)); {
		case dif == 0:
			if q.deq.CompareAndSwap(pos, pos+1) {
				v := c.val
				release.AtomicUint64(&c.seq, pos+q.mask+1) // hand the cell to the producer of the next lap
				return v, true
			}
			pos = q.deq.Load()
		case dif < 0:
			return 0, false // empty
		default:
			pos = q.deq.Load()
		}
	}
}

// PopBatch removes up to len(dst) values into dst and returns how many.
func (q *Queue) PopBatch(dst []uint32) int {
	n := 0
	for n < len(dst) {
		v, ok := q.Pop()
		if !ok {
			break
		}
		dst[n] = v
		n++
	}
	return n
}
