package ioring

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFreeListCirculation keeps every slot of a free list in circulation:
// one taker (the test goroutine, as the holder of Ring.sqMu) hands slots to
// releasers, which return them in chains of 1 to 4 slots from their own
// goroutines while the taker swaps the shared stack out. No slot may be
// lost or appear twice.
func TestFreeListCirculation(t *testing.T) {
	const slots, releasers = 64, 4
	rounds := 20000
	if testing.Short() {
		rounds = 2000
	}
	r := &Ring{slots: make([]slot, slots)}
	var all chain
	for i := slots - 1; i >= 0; i-- {
		addFree(&all, uint32(i), &r.slots[i])
	}
	r.pushFree(&all)
	assert.Zero(t, all, "pushFree empties the chain")

	work := make(chan uint32, slots)
	var wg sync.WaitGroup
	for g := 0; g < releasers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c chain
			n := 0
			for idx := range work {
				addFree(&c, idx, &r.slots[idx])
				if n++; n%(g+1) == 0 { // chains of 1 to releasers slots
					r.pushFree(&c)
				}
			}
			r.pushFree(&c)
		}()
	}
	for done := 0; done < rounds; {
		idx, s := r.popFree() // this goroutine is the only taker
		if s == nil {
			continue // every slot is queued for a releaser or in its chain
		}
		work <- idx
		done++
	}
	close(work)
	wg.Wait()

	seen := make([]bool, slots)
	for n := 0; ; n++ {
		idx, s := r.popFree()
		if s == nil {
			break
		}
		require.Less(t, n, slots, "more free slots than slots: a cycle")
		require.False(t, seen[idx], "slot %d twice in the free list", idx)
		seen[idx] = true
	}
	for i, ok := range seen {
		assert.True(t, ok, "slot %d lost", i)
	}
}
