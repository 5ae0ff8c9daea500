// Package cpio writes and reads cpio archives in the "newc" (SVR4, no CRC)
// format, the format the Linux kernel unpacks as an initramfs
// (Documentation/driver-api/early-userspace/buffer-format.rst).
//
// The writer creates missing parent directories itself, because the kernel's
// unpacker does not: a file whose directory was not listed first is dropped.
package cpio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110 // 6 bytes of magic and 13 fields of 8 hex digits
	trailer    = "TRAILER!!!"
)

// Mode bits of the file type, as in <sys/stat.h>.
const (
	typeMask = 0o170000
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeLink = 0o120000
)

// ErrWriterClosed is returned by a Writer's methods after Close.
var ErrWriterClosed = errors.New("cpio: writer closed")

// Writer writes a newc archive. It is not safe for concurrent use. Names are
// stored without a leading slash, as the kernel expects; "a/b" and "/a/b" are
// the same entry. An entry written twice is an error, except directories,
// which are written once and then ignored.
type Writer struct {
	w      *bufio.Writer
	ino    uint32
	n      int64           // bytes written so far, for padding
	names  map[string]bool // entries written, directories included
	closed bool
	err    error // first write error, sticky
}

// NewWriter returns a Writer that writes an archive to w. The caller must call
// Close to write the trailer and flush.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 1<<16), ino: 1, names: map[string]bool{}}
}

func clean(name string) (string, error) {
	c := strings.TrimPrefix(path.Clean("/"+name), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("cpio: empty name %q", name)
	}
	return c, nil
}

// Dir adds a directory with permission bits perm, creating missing parents
// with mode 0755. Adding a directory that exists is not an error.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	c, err := clean(name)
	if err != nil {
		return err
	}
	if w.names[c] {
		return nil
	}
	if err := w.parents(c); err != nil {
		return err
	}
	return w.entry(c, typeDir|uint32(perm.Perm()), 0, nil, 2)
}

// File adds a regular file of size bytes read from r, with permission bits
// perm. It fails if r holds fewer than size bytes.
func (w *Writer) File(name string, perm fs.FileMode, size int64, r io.Reader) error {
	c, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.fresh(c); err != nil {
		return err
	}
	if err := w.parents(c); err != nil {
		return err
	}
	return w.entry(c, typeReg|uint32(perm.Perm()), size, r, 1)
}

// Bytes adds a regular file holding data.
func (w *Writer) Bytes(name string, perm fs.FileMode, data []byte) error {
	return w.File(name, perm, int64(len(data)), bytes.NewReader(data))
}

// Symlink adds a symbolic link name pointing to target.
func (w *Writer) Symlink(name, target string) error {
	c, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.fresh(c); err != nil {
		return err
	}
	if err := w.parents(c); err != nil {
		return err
	}
	return w.entry(c, typeLink|0o777, int64(len(target)), strings.NewReader(target), 1)
}

// Has reports whether an entry name (file, link or directory) was written.
func (w *Writer) Has(name string) bool {
	c, err := clean(name)
	return err == nil && w.names[c]
}

// Close writes the trailer and flushes. It does not close the underlying
// writer. Later calls return ErrWriterClosed.
func (w *Writer) Close() error {
	if w.closed {
		return ErrWriterClosed
	}
	if err := w.entry(trailer, 0, 0, nil, 1); err != nil {
		return err
	}
	w.closed = true
	if err := w.w.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

func (w *Writer) fresh(c string) error {
	if w.names[c] {
		return fmt.Errorf("cpio: duplicate entry %q", c)
	}
	return nil
}

func (w *Writer) parents(c string) error {
	d := path.Dir(c)
	if d == "." || w.names[d] {
		return nil
	}
	return w.Dir(d, 0o755)
}

func (w *Writer) entry(name string, mode uint32, size int64, r io.Reader, nlink uint32) error {
	if w.closed {
		return ErrWriterClosed
	}
	if w.err != nil {
		return w.err
	}
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d does not fit the newc format", name, size)
	}
	ino := w.ino
	w.ino++
	if name == trailer {
		ino = 0
	}
	fields := []uint32{
		ino, mode, 0, 0, nlink, 0, uint32(size),
		0, 0, 0, 0, // dev major/minor, rdev major/minor
		uint32(len(name) + 1), 0, // name size with NUL, check
	}
	var hdr [headerSize]byte
	copy(hdr[:], magic)
	for i, f := range fields {
		copy(hdr[6+8*i:], fmt.Sprintf("%08x", f))
	}
	w.write(hdr[:])
	w.write([]byte(name + "\x00"))
	w.pad()
	if r != nil {
		n, err := io.CopyN(w.w, r, size)
		w.n += n
		if err != nil && w.err == nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("cpio: %s: short data: %d of %d bytes", name, n, size)
			}
			w.err = err
		}
		w.pad()
	}
	if w.err == nil && name != trailer {
		w.names[name] = true
	}
	return w.err
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	n, err := w.w.Write(p)
	w.n += int64(n)
	w.err = err
}

func (w *Writer) pad() {
	if r := w.n % 4; r != 0 {
		w.write(make([]byte, 4-r))
	}
}

// Header describes one entry read by a Reader.
type Header struct {
	Name     string      // without a leading slash
	Mode     fs.FileMode // type and permission bits, as fs.FileMode
	Size     int64
	Linkname string // target of a symbolic link
}

// Reader reads a newc archive entry by entry. It is not safe for concurrent
// use.
type Reader struct {
	r      io.Reader
	n      int64 // bytes consumed
	remain int64 // unread data of the current entry
}

// NewReader returns a Reader reading the archive from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next advances to the next entry and returns its header. It returns io.EOF
// after the trailer.
func (r *Reader) Next() (*Header, error) {
	if err := r.skip(r.remain); err != nil {
		return nil, err
	}
	r.remain = 0
	if err := r.align(); err != nil {
		return nil, err
	}
	var hdr [headerSize]byte
	if err := r.read(hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // an archive ends with its trailer
		}
		return nil, err
	}
	if string(hdr[:6]) != magic {
		return nil, fmt.Errorf("cpio: bad magic %q at offset %d", hdr[:6], r.n-headerSize)
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("cpio: bad header field %d: %w", i, err)
		}
		f[i] = uint32(v)
	}
	mode, size, nameSize := f[1], int64(f[6]), f[11]
	if nameSize == 0 || nameSize > 4096 {
		return nil, fmt.Errorf("cpio: bad name size %d", nameSize)
	}
	name := make([]byte, nameSize)
	if err := r.read(name); err != nil {
		return nil, err
	}
	if name[nameSize-1] != 0 {
		return nil, errors.New("cpio: name not NUL-terminated")
	}
	h := &Header{Name: string(name[:nameSize-1]), Size: size, Mode: fileMode(mode)}
	if h.Name == trailer {
		return nil, io.EOF
	}
	if err := r.align(); err != nil {
		return nil, err
	}
	r.remain = size
	if mode&typeMask == typeLink {
		target := make([]byte, size)
		if err := r.read(target); err != nil {
			return nil, err
		}
		r.remain = 0
		h.Linkname = string(target)
	}
	return h, nil
}

// Read reads the current entry's data.
func (r *Reader) Read(p []byte) (int, error) {
	if r.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.n += int64(n)
	r.remain -= int64(n)
	if errors.Is(err, io.EOF) && r.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *Reader) read(p []byte) error {
	n, err := io.ReadFull(r.r, p)
	r.n += int64(n)
	return err
}

func (r *Reader) skip(n int64) error {
	m, err := io.CopyN(io.Discard, r.r, n)
	r.n += m
	if err != nil && errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (r *Reader) align() error {
	if rem := r.n % 4; rem != 0 {
		return r.skip(4 - rem)
	}
	return nil
}

func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & typeMask {
	case typeDir:
		mode |= fs.ModeDir
	case typeLink:
		mode |= fs.ModeSymlink
	case typeReg:
	default:
		mode |= fs.ModeIrregular
	}
	return mode
}
