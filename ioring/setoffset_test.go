//go:build linux

package ioring

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSetOffset reads a file in chunks through one Op per buffer, re-aimed
// with SetOffset, and writes through a re-aimed Write: each request acts at
// the offset set last. An offset below -1 is refused at submission, -1
// reads at the current position, and an operation without an offset keeps
// what its constructor stored in the field (OpenAt's mode).
func TestSetOffset(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		path := filepath.Join(t.TempDir(), "data")
		data := make([]byte, 4*64)
		for i := range data {
			data[i] = byte(i / 64) // chunk k holds the byte k
		}
		require.NoError(t, os.WriteFile(path, data, 0o600))
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		require.NoError(t, err)
		defer f.Close()
		fd := int(f.Fd())

		bufs := [][]byte{make([]byte, 64), make([]byte, 64)}
		tmpl := []Op{Read(fd, bufs[0], 0).WithUser(0), Read(fd, bufs[1], 0).WithUser(1)}
		ops := make([]Op, 2)
		reqs := make([]Request, 2)
		comps := make([]Completion, 2)
		for _, offs := range [][2]int64{{192, 64}, {0, 128}} {
			for k := range ops {
				ops[k] = tmpl[k]
				ops[k].SetOffset(offs[k])
			}
			m, err := r.SubmitBatch(ops, reqs)
			require.NoError(t, err)
			require.Equal(t, 2, m)
			for got := 0; got < 2; {
				g, err := r.Reap(comps, -1)
				require.NoError(t, err)
				for _, c := range comps[:g] {
					require.NoError(t, c.Err)
					k := c.User.(int)
					assert.Equal(t, 64, c.N)
					assert.Equal(t, byte(offs[k]/64), bufs[k][0], "buffer %d read at %d", k, offs[k])
					assert.Equal(t, byte(offs[k]/64), bufs[k][63])
				}
				got += g
			}
		}
		assert.Equal(t, int64(0), tmpl[0].off, "the templates are values: SetOffset changed copies")

		// Set after submission, the offset moves only later submissions:
		// the request reads where it was aimed when submitted.
		ops[0] = tmpl[0]
		ops[0].SetOffset(192)
		_, err = r.SubmitBatch(ops[:1], reqs[:1])
		require.NoError(t, err)
		ops[0].SetOffset(0)
		g, err := r.Reap(comps[:1], -1)
		require.NoError(t, err)
		require.Equal(t, 1, g)
		require.NoError(t, comps[0].Err)
		assert.Equal(t, byte(3), bufs[0][0], "read at 192, where it was submitted")

		// A write re-aimed: it lands at the offset set.
		w := Write(fd, []byte("zz"), 0)
		w.SetOffset(100)
		c, err := r.Do(context.Background(), w)
		require.NoError(t, err)
		require.NoError(t, c.Err)
		got := make([]byte, 2)
		_, err = f.ReadAt(got, 100)
		require.NoError(t, err)
		assert.Equal(t, "zz", string(got))

		// -1: the current position.
		_, err = f.Seek(130, 0)
		require.NoError(t, err)
		op := tmpl[0]
		op.SetOffset(-1)
		c, err = r.Do(context.Background(), op)
		require.NoError(t, err)
		require.NoError(t, c.Err)
		assert.Equal(t, byte(130/64), bufs[0][0], "read at the position the file was at")

		// Below -1: refused at submission, nothing submitted.
		op.SetOffset(-2)
		_, err = r.Submit(op)
		assert.ErrorIs(t, err, ErrInvalid)
		m, err := r.SubmitBatch([]Op{op}, reqs[:1])
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, m)
		assert.Zero(t, r.InFlight())

		// No offset to set: OpenAt keeps its mode in the same field.
		open := OpenAt(unix.AT_FDCWD, path, unix.O_RDONLY, 0o600)
		open.SetOffset(12345)
		assert.Equal(t, int64(0o600), open.off)
		assert.NoError(t, open.check(r))
	})
}
