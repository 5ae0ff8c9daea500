package cq

import (
	"runtime"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadCapacity(t *testing.T) {
	for _, n := range []int{-1, 0, 1, 3, 6, 100} {
		_, err := New(n)
		assert.ErrorIs(t, err, ErrSize, "capacity %d", n)
	}
	q, err := New(8)
	require.NoError(t, err)
	assert.Equal(t, 8, q.Cap())
}

func TestFIFOAndBounds(t *testing.T) {
	q, err := New(4)
	require.NoError(t, err)
	_, ok := q.Pop()
	assert.False(t, ok, "pop from empty queue")
	for i := uint32(0); i < 4; i++ {
		require.True(t, q.Push(i))
	}
	assert.False(t, q.Push(99), "push into full queue")
	assert.Equal(t, 4, q.Len())
	for lap := 0; lap < 3; lap++ {
		for i := uint32(0); i < 4; i++ {
			v, ok := q.Pop()
			require.True(t, ok)
			assert.Equal(t, i, v)
			require.True(t, q.Push(i))
		}
	}
	dst := make([]uint32, 8)
	assert.Equal(t, 4, q.PopBatch(dst))
	assert.Equal(t, []uint32{0, 1, 2, 3}, dst[:4])
	assert.Equal(t, 0, q.Len())
}

// TestMPMC pushes every value once from several producers while several
// consumers pop; each value must come out exactly once.
func TestMPMC(t *testing.T) {
	const producers, consumers = 4, 4
	per := 50000
	if testing.Short() {
		per = 5000
	}
	q, err := New(64)
	require.NoError(t, err)
	total := producers * per
	seen := make([]int32, total)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	done := make(chan struct{})
	for c := 0; c < consumers; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]uint32, 16)
			for {
				n := q.PopBatch(buf)
				mu.Lock()
				for _, v := range buf[:n] {
					seen[v]++
				}
				got += n
				finished := n > 0 && got == total
				mu.Unlock()
				if finished {
					close(done)
					return
				}
				select {
				case <-done:
					return
				default:
				}
				if n == 0 {
					// Empty: let the producers run (on one P, spinning
					// would only burn the time slice they need).
					runtime.Gosched()
				}
			}
		}()
	}
	var pw sync.WaitGroup
	for p := 0; p < producers; p++ {
		pw.Add(1)
		go func(p int) {
			defer pw.Done()
			for i := 0; i < per; i++ {
				for !q.Push(uint32(p*per + i)) {
					runtime.Gosched() // full: let the consumers run
				}
			}
		}(p)
	}
	pw.Wait()
	wg.Wait()
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("value %d popped %d times, want 1", v, n)
		}
	}
}

func TestPushPopAllocs(t *testing.T) {
	q, err := New(16)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(1000, func() {
		q.Push(1)
		q.Pop()
	})
	assert.Zero(t, allocs)
}

func BenchmarkPushPop(b *testing.B) {
	q, _ := New(1024)
	b.ReportAllocs()
	for b.Loop() {
		q.Push(1)
		q.Pop()
	}
}

// TestPushWaitFullCirculation keeps exactly Cap values in circulation
// between goroutines that pop and push them back, as a free list of request slots
// would: no value may ever be lost to a push that found a cell still being
// released by a lagging Pop.
func TestPushWaitFullCirculation(t *testing.T) {
	const capacity = 8
	q, err := New(capacity)
	require.NoError(t, err)
	for i := uint32(0); i < capacity; i++ {
		q.PushWait(i)
	}
	rounds := 200000
	if testing.Short() {
		rounds = 20000
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				v, ok := q.Pop()
				if !ok {
					continue
				}
				q.PushWait(v)
			}
		}()
	}
	wg.Wait()
	seen := map[uint32]bool{}
	for {
		v, ok := q.Pop()
		if !ok {
			break
		}
		seen[v] = true
	}
	assert.Len(t, seen, capacity, "values still in circulation")
}
