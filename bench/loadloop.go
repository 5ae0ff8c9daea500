package bench

import (
	"sync"
	"sync/atomic"
	"time"
)

// CancelLoop runs a read+cancel cycle every period on its own goroutine, for
// impls whose CancelLoad is a background goroutine (the Go baselines; the
// C baseline interleaves the cycle into its own loop instead).
type CancelLoop struct {
	cycles atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
	err    error // first cycle error; read after wg.Wait
}

// StartCancelLoop calls cycle every period until Stop. cycle must submit one
// read, cancel it and wait for its completion. A failing cycle ends the loop;
// Stop returns its error.
func StartCancelLoop(period time.Duration, cycle func() error) *CancelLoop {
	l := &CancelLoop{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-t.C:
			}
			if err := cycle(); err != nil {
				l.err = err
				return
			}
			l.cycles.Add(1)
		}
	}()
	return l
}

// Cycles returns the number of completed cycles.
func (l *CancelLoop) Cycles() int64 { return l.cycles.Load() }

// Stop ends the loop, waits for it and returns the first cycle error.
func (l *CancelLoop) Stop() error {
	close(l.stop)
	l.wg.Wait()
	return l.err
}
