package ioring

import (
	"errors"
	"sync/atomic"
)

// Stats are a Ring's counters, for a driver to export as metrics. Every
// count is since New; a snapshot is not atomic across fields (requests
// keep completing while it is taken), but each field is exact for its
// moment.
type Stats struct {
	// Submitted counts the requests accepted (Submit, Start, SubmitBatch,
	// Do...), including those that completed at once because their token
	// was canceled.
	Submitted uint64
	// Completed counts the accepted requests that have completed (their
	// completions delivered or waiting to be): Submitted - InFlight. It
	// never decreases from one snapshot to the next, and never counts a
	// request that is still in flight.
	Completed uint64
	// Canceled counts the completions delivered with ErrCanceled (by a
	// cancel, a token, a context or Close); TimedOut those delivered with
	// ErrTimeout (a deadline, or a context's), which are not in Canceled.
	// They count a completion when it is delivered (Reap, Request.Wait),
	// not when it leaves flight: a canceled request that InFlight and
	// Completed no longer count is in Canceled only once a consumer has
	// taken its completion.
	Canceled uint64
	TimedOut uint64
	// InFlight is Ring.InFlight.
	InFlight int
	// KernelEnters counts the io_uring_enter system calls (0 on the poll
	// backend): submissions, waits and flushes. Submitted/KernelEnters is
	// the batching achieved.
	KernelEnters uint64
	// CQOverflows is the kernel's count of completions that did not fit
	// its completion ring (IORING_SQ_CQ_OVERFLOW's counter); 0 on the poll
	// backend. Recent kernels hold such completions until they are reaped
	// (IORING_FEAT_NODROP) without counting them here, and count only those
	// they had to drop, so it says little on them; a multishot request the
	// kernel ended because its ring was full (see PollMultishot) is not
	// counted either. Reap often enough, or raise Config.Entries.
	CQOverflows uint64
	// Fallbacks counts, by operation, the requests the poll backend ran as
	// a blocking system call on a worker thread (files epoll cannot wait
	// for, blocking ttys and listeners, opens and closes), where a cancel
	// can no longer interrupt them. It is nil on io_uring.
	Fallbacks map[Opcode]uint64
}

// ringStats are the counters kept as requests go; the others are read from
// state the ring keeps anyway (slot generations, the kernel's own counters),
// so that the hot path pays nothing for them: a completion without an error
// touches none of these.
type ringStats struct {
	canceled  atomic.Uint64
	timedOut  atomic.Uint64
	completed atomic.Uint64 // the highest Stats.Completed reported
	fallbacks [numOps]atomic.Uint64
	// cqOverflows is the kernel's count as last read (Close unmaps it).
	cqOverflows atomic.Uint64
}

// noteErr counts a delivered completion's error, when it is a cancel (or
// a timeout). ErrOverrun is neither: the ring ended the request.
func (st *ringStats) noteErr(err error) {
	// errors.Is, not errors.As: As needs its target on the heap, which
	// would allocate on every canceled completion.
	timeout := false
	if ce, ok := err.(*cancelError); ok {
		if err == ErrOverrun {
			return
		}
		timeout = ce.timeout
	} else if errors.Is(err, ErrTimeout) {
		timeout = true
	} else if !errors.Is(err, ErrCanceled) {
		return
	}
	if timeout {
		st.timedOut.Add(1)
	} else {
		st.canceled.Add(1)
	}
}

// noteFallback counts a request of op run on a worker.
func (st *ringStats) noteFallback(op Opcode) { st.fallbacks[op].Add(1) }

// Stats returns the ring's counters. It walks the request slots (a few
// microseconds for the default 256): call it at a metrics scrape, not per
// request. Safe for concurrent use, also after Close.
func (r *Ring) Stats() Stats {
	if r == nil {
		return Stats{}
	}
	st := Stats{
		Canceled: r.stats.canceled.Load(),
		TimedOut: r.stats.timedOut.Load(),
	}
	// Every accepted request took a slot with a new generation: their sum
	// is the number accepted, with no counter on the submit path. It is
	// summed before the count in flight is read, so that Completed never
	// counts a request not yet delivered (one accepted meanwhile counts
	// in flight, not in Submitted); and as a count since New it never goes
	// below what an earlier call reported (one accepted during the sum
	// may make it lag).
	for i := range r.slots {
		st.Submitted += r.slots[i].key() >> idxBits
	}
	st.InFlight = int(max(r.inFlight(), 0))
	if st.Submitted >= uint64(st.InFlight) {
		st.Completed = st.Submitted - uint64(st.InFlight)
	}
	for last := r.stats.completed.Load(); ; last = r.stats.completed.Load() {
		if st.Completed <= last {
			st.Completed = last
			break
		}
		if r.stats.completed.CompareAndSwap(last, st.Completed) {
			break
		}
	}
	r.backendStats(&st)
	if r.info.Backend == BackendPoll {
		for op := range r.stats.fallbacks {
			if n := r.stats.fallbacks[op].Load(); n > 0 {
				if st.Fallbacks == nil {
					st.Fallbacks = make(map[Opcode]uint64)
				}
				st.Fallbacks[Opcode(op)] = n
			}
		}
	}
	return st
}
