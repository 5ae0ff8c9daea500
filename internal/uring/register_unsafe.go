//go:build linux

package uring

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RegisterBuffers registers the buffers iovs describes
// (IORING_REGISTER_BUFFERS): the kernel pins their pages once, and
// READ_FIXED and WRITE_FIXED name them by index. EBUSY: some are
// registered already.
func (r *Ring) RegisterBuffers(iovs []unix.Iovec) error {
	if len(iovs) == 0 {
		return unix.EINVAL
	}
	return r.register(RegisterBuffers, unsafe.Pointer(&iovs[0]), uintptr(len(iovs)))
}

// UnregisterBuffers drops the registered buffers (IORING_UNREGISTER_BUFFERS).
func (r *Ring) UnregisterBuffers() error { return r.register(UnregisterBuffers, nil, 0) }

// RegisterFiles registers the files fds name (IORING_REGISTER_FILES): the
// kernel holds a reference to each, and SQEs with IOSQE_FIXED_FILE name
// them by index. An fd of -1 leaves its entry empty. EBUSY: files are
// registered already.
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return unix.EINVAL
	}
	return r.register(RegisterFiles, unsafe.Pointer(&fds[0]), uintptr(len(fds)))
}

// UnregisterFiles drops the registered files (IORING_UNREGISTER_FILES);
// requests the kernel has issued keep their references.
func (r *Ring) UnregisterFiles() error { return r.register(UnregisterFiles, nil, 0) }

// PbufRing is a provided-buffer ring (IORING_REGISTER_PBUF_RING, kernel
// 5.19): entries the kernel takes buffers from, in memory mapped for it
// (page-aligned, as the kernel wants). Its tail is the only index the
// application writes; the kernel keeps its head to itself. Not safe for
// concurrent use: the caller serialises Add.
type PbufRing struct {
	r      *Ring
	mem    []byte // the mapping
	bufs   []Buf  // its entries
	mask   uint16
	tail   uint16
	bgid   uint16
	mapped bool
}

// RegisterPbufRing maps a ring of entries (a power of two up to
// MaxPbufEntries) and registers it as buffer group bgid. It starts empty:
// Add the buffers.
func (r *Ring) RegisterPbufRing(entries uint32, bgid uint16) (*PbufRing, error) {
	if entries == 0 || entries > MaxPbufEntries || entries&(entries-1) != 0 {
		return nil, unix.EINVAL
	}
	size := int(entries) * int(unsafe.Sizeof(Buf{}))
	page := unix.Getpagesize()
	size = (size + page - 1) &^ (page - 1)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	p := &PbufRing{r: r, mem: mem, mask: uint16(entries - 1), bgid: bgid, mapped: true}
	p.bufs = unsafe.Slice((*Buf)(unsafe.Pointer(&mem[0])), entries)
	reg := BufReg{RingAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), RingEntries: entries, BGID: bgid}
	if err := r.register(RegisterPbufRing, unsafe.Pointer(&reg), 1); err != nil {
		unix.Munmap(mem)
		return nil, err
	}
	return p, nil
}

// Add puts a buffer (id, memory buf) at the ring's tail and publishes it:
// the kernel may pick it from then on. buf must stay valid until the kernel
// hands it back in a CQE (IORING_CQE_F_BUFFER) or the ring is unregistered.
func (p *PbufRing) Add(id uint16, buf []byte) {
	e := &p.bufs[p.tail&p.mask]
	e.Addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	e.Len = uint32(len(buf))
	e.BID = id
	p.tail++
	// The tail is the u16 overlaying the first entry's Resv. Go has no
	// 16-bit atomic store: store the aligned 32 bits that hold it with the
	// first entry's BID, which only this writer changes, so that the
	// entry is written before the tail that publishes it (a release).
	var w [4]byte
	binary.NativeEndian.PutUint16(w[0:2], p.bufs[0].BID)
	binary.NativeEndian.PutUint16(w[2:4], p.tail)
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&p.bufs[0].BID)), binary.NativeEndian.Uint32(w[:]))
}

// Addr returns the address of the ring's mapping.
func (p *PbufRing) Addr() unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(p.mem)) }

// Close unregisters the ring (when unregister is set: skip it once the
// io_uring instance is closed) and unmaps its memory.
func (p *PbufRing) Close(unregister bool) error {
	var err error
	if unregister {
		reg := BufReg{BGID: p.bgid}
		err = p.r.register(UnregisterPbufRing, unsafe.Pointer(&reg), 1)
	}
	if p.mapped {
		p.mapped = false
		p.bufs = nil
		if e := unix.Munmap(p.mem); e != nil && err == nil {
			err = e
		}
	}
	return err
}
