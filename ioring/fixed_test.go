//go:build linux

package ioring

import (
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Registering buffers: once at a time, refused when empty, undone by
// UnregisterBuffers (then a fixed read fails with EFAULT), refused after Close.
func TestConformanceRegisterBuffers(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		assert.ErrorIs(t, r.RegisterBuffers(nil), ErrInvalid)
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{make([]byte, 8), nil}), ErrInvalid)
		assert.ErrorIs(t, r.UnregisterBuffers(), unix.ENXIO, "nothing registered")
		bufs := [][]byte{make([]byte, 4096), make([]byte, 4096)}
		require.NoError(t, r.RegisterBuffers(bufs))
		assert.ErrorIs(t, r.RegisterBuffers(bufs), unix.EBUSY)
		fd := tempFile(t, []byte("second"))
		c := doOp(t, r, ReadFixed(fd, bufs[1], 0, 1))
		require.NoError(t, c.Err)
		assert.Equal(t, "second", string(bufs[1][:c.N]))
		c = doOp(t, r, ReadFixed(fd, bufs[1], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "buffer 1 is not buffer 0")
		// An index out of the kernel's range is refused, never truncated
		// into one in range (1<<32 would be buffer 0, 1<<32+1 buffer 1).
		indexes := []int{-1, maxFixed, math.MaxInt, math.MinInt}
		if strconv.IntSize == 64 {
			w := 32 // a variable: the constants overflow a 32-bit int
			indexes = append(indexes, 1<<w, 1<<w+1, -1<<w)
		}
		for _, index := range indexes {
			_, err := r.Submit(ReadFixed(fd, bufs[0], 0, index))
			assert.ErrorIs(t, err, ErrInvalid, "read into buffer %d", index)
			_, err = r.Submit(WriteFixed(fd, bufs[1], 0, index))
			assert.ErrorIs(t, err, ErrInvalid, "write from buffer %d", index)
		}
		require.NoError(t, r.UnregisterBuffers())
		c = doOp(t, r, ReadFixed(fd, bufs[0], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "unregistered")
		require.NoError(t, r.RegisterBuffers(bufs[:1]), "registered again")
		require.NoError(t, r.Close())
		assert.ErrorIs(t, r.RegisterBuffers(bufs), ErrClosed)
		assert.ErrorIs(t, r.UnregisterBuffers(), ErrClosed)
	})
}

// BenchmarkRead4KFixed: 4 KiB reads at QD32 from the page cache, into
// registered buffers beside plain ones.
func BenchmarkRead4KFixed(b *testing.B) {
	forEachBackendB(b, 64, func(b *testing.B, r *Ring) {
		const qd = 32
		data := make([]byte, 1<<20)
		fd := tempFile(b, data)
		pool := make([]byte, qd*4096)
		if err := r.RegisterBuffers([][]byte{pool}); err != nil {
			b.Fatal(err)
		}
		for _, fixed := range []bool{false, true} {
			name := "buffers=plain"
			if fixed {
				name = "buffers=registered"
			}
			b.Run(name, func(b *testing.B) {
				ops := make([]Op, qd)
				reqs := make([]Request, qd)
				cs := make([]Completion, qd)
				b.SetBytes(4096)
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; done += qd {
					for i := range ops {
						off := int64((done+i)%256) * 4096
						if fixed {
							ops[i] = ReadFixed(fd, pool[i*4096:(i+1)*4096], off, 0)
						} else {
							ops[i] = Read(fd, pool[i*4096:(i+1)*4096], off)
						}
					}
					if _, err := r.SubmitBatch(ops, reqs); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < qd; {
						n, err := r.Reap(cs[got:], -1)
						if err != nil {
							b.Fatal(err)
						}
						for _, c := range cs[got : got+n] {
							if c.Err != nil {
								b.Fatal(c.Err)
							}
						}
						got += n
					}
				}
			})
		}
	})
}
