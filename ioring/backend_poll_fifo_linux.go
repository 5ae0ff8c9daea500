//go:build linux

package ioring

import (
	"encoding/binary"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// A write-only open of a FIFO without a reader waits, on the poll backend,
// on the slot's timer between non-blocking tries (openAt, openLater), so
// that a cancel reaches it at once and it holds no worker. A try sees only
// the readers there at that moment, but open(2) (and io_uring's open,
// blocking in its worker) completes once a reader has come, even one that
// closed again before the writer woke: the kernel counts the readers'
// opens. To see a reader that comes and goes between two tries, each such
// request watches its FIFO for opens (inotify IN_OPEN: one inotify
// instance per backend, one watch per FIFO, shared by its requests). Any
// open of a FIFO that succeeds, O_PATH aside, means a reader was there at
// that moment: a reader's own open, an O_RDWR one, or a writer's that
// found a reader. So when a try finds no reader although the FIFO was
// opened since the request began to watch it, a reader came and went: the
// open completes, as open(2)'s would, with a write end whose reader is
// gone (openPast).
//
// A cancel only stops the timer, as before: it opens nothing, and another
// writer waiting in open(2) for the same FIFO (another thread, another
// process) waits on. (Letting a worker block in open(2) and ending that
// open, to cancel it, by opening the FIFO for reading would let every such
// writer in, with no reader behind it, and could not tell a real reader
// that came just before the cancel from the backend's own.)
//
// What is left: a reader that comes and goes before the request's first
// try (as on io_uring before its worker's open starts), or while inotify
// is unavailable (no /proc, the instance or watch limits reached: then the
// timer alone, as before), or lost to a full inotify queue, is missed. The
// instance lives while some request watches: one file descriptor then.
// openPast opens the FIFO for reading itself, for the moment of its
// non-blocking open: a writer of another process that started to wait
// after the real reader left and before the next try is let in by it; and
// where the process may not read the FIFO, openPast cannot, and the open
// waits on.

// fifoWatches is the poll backend's inotify instance and its watches.
// mu is a leaf: it is taken under b.mu (finish) and without it (workers).
type fifoWatches struct {
	mu  sync.Mutex
	fd  int // the inotify fd while there are watches, else -1
	by  map[int32]*fifoWatch
	buf []byte
}

// fifoWatch is one FIFO's watch: its inode, an O_PATH fd that pins it
// (openPast opens the FIFO through it), the requests watching it and the
// opens seen so far (compared for change only: wrapping is harmless).
type fifoWatch struct {
	dev, ino uint64
	fpath    int32
	refs     int32
	opens    uint32
}

// watchFIFO makes p watch the FIFO that slot s's path names now, relative
// to dirfd, for opens: it keeps p's watch when that is the same FIFO,
// else it drops that and watches the new one (opens counted from then
// on). Nothing changes when the path names no FIFO now or inotify fails.
// A worker calls it, the request psRunning.
func (b *pollBackend) watchFIFO(s *slot, p *pslot, dirfd int32) {
	r := sysOpen(s, dirfd, unix.O_PATH|unix.O_CLOEXEC|s.events&unix.O_NOFOLLOW)
	if r < 0 {
		return
	}
	fd := int(r)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(fd)
		return
	}
	w := &b.fifo
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.fwd >= 0 {
		if fw := w.by[p.fwd]; fw.dev == uint64(st.Dev) && fw.ino == st.Ino {
			unix.Close(fd)
			return
		}
		if old := w.dropLocked(p.fwd); old >= 0 {
			unix.Close(int(old))
		}
		p.fwd = -1
	}
	if !w.initLocked() {
		unix.Close(fd)
		return
	}
	// Events queued so far are counted before the snapshot: an open
	// counts only when it came after it (or, when the FIFO had a watch
	// already, between the snapshot and the inotify_add_watch, which
	// the request is waiting by then too).
	w.drainLocked()
	wd, err := unix.InotifyAddWatch(w.fd, "/proc/self/fd/"+strconv.Itoa(fd), unix.IN_OPEN)
	if err != nil {
		unix.Close(fd)
		return
	}
	fw := w.by[int32(wd)]
	if fw == nil {
		fw = &fifoWatch{dev: uint64(st.Dev), ino: st.Ino, fpath: int32(fd)}
		w.by[int32(wd)] = fw
	} else {
		unix.Close(fd) // the watch's own pins the same inode
	}
	fw.refs++
	p.fwd, p.fseen = int32(wd), fw.opens
}

// fifoOpened reports whether p's FIFO was opened since p began to watch
// it (or since the last time this said so), and returns the watch's
// O_PATH fd of it, which stays open while p watches. A worker calls it,
// the request psRunning and watching.
func (b *pollBackend) fifoOpened(p *pslot) (fpath int32, opened bool) {
	w := &b.fifo
	w.mu.Lock()
	defer w.mu.Unlock()
	w.drainLocked()
	fw := w.by[p.fwd]
	if fw == nil || fw.opens == p.fseen {
		return -1, false
	}
	p.fseen = fw.opens
	return fw.fpath, true
}

// unwatchFIFO drops p's watch, queueing on out the close of the FIFO's
// O_PATH fd when p was its last request. b.mu held (finish).
func (b *pollBackend) unwatchFIFO(p *pslot, out []compl) []compl {
	w := &b.fifo
	w.mu.Lock()
	fpath := w.dropLocked(p.fwd)
	w.mu.Unlock()
	if fpath >= 0 {
		out = append(out, compl{closeFD, fpath, 0})
	}
	p.fwd = -1
	return out
}

// initLocked makes the inotify instance if there is none and reports
// whether there is one (an instance counts against the user's
// fs.inotify.max_user_instances: it lives only while a request watches).
// w.mu held.
func (w *fifoWatches) initLocked() bool {
	if w.fd >= 0 {
		return true
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return false // the timer alone; tried again by the next request
	}
	w.fd = fd
	if w.by == nil {
		w.by = make(map[int32]*fifoWatch)
		w.buf = make([]byte, 4096)
	}
	return true
}

// dropLocked drops one request's reference to watch wd, removing the watch
// with the last (and the instance with the last watch): then it returns
// the watch's O_PATH fd, for the caller to close, else -1. w.mu held.
func (w *fifoWatches) dropLocked(wd int32) (fpath int32) {
	fw := w.by[wd]
	if fw == nil {
		return -1
	}
	if fw.refs--; fw.refs > 0 {
		return -1
	}
	delete(w.by, wd)
	if len(w.by) == 0 {
		w.closeLocked() // its watches go with it
	} else {
		unix.InotifyRmWatch(w.fd, uint32(wd))
	}
	return fw.fpath
}

// drainLocked reads the queued events and counts each watch's opens.
// w.mu held, the instance made.
func (w *fifoWatches) drainLocked() {
	const hdr = unix.SizeofInotifyEvent // wd, mask, cookie, len; then a name
	for {
		n, err := unix.Read(w.fd, w.buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return // EAGAIN: none left
		}
		for off := 0; off+hdr <= n; {
			wd := int32(binary.NativeEndian.Uint32(w.buf[off:]))
			mask := binary.NativeEndian.Uint32(w.buf[off+4:])
			nlen := int(binary.NativeEndian.Uint32(w.buf[off+12:]))
			off += hdr + nlen
			if mask&unix.IN_OPEN != 0 {
				if fw := w.by[wd]; fw != nil {
					fw.opens++
				}
			}
		}
	}
}

// closeLocked closes the inotify instance, if any: its last watch was
// dropped, or the backend closes (no request is left). w.mu held.
func (w *fifoWatches) closeLocked() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

// openPast completes slot s's write-only open of the FIFO fpath (an O_PATH
// fd) names, which a reader opened and closed again since the request
// began to wait: it opens the FIFO for reading itself, then for writing
// as s asks (non-blocking: a reader is there), closes its reader and
// clears O_NONBLOCK, as openAt does. ok is false when it could not open
// the reader (the process may not read the FIFO): the open waits on.
func openPast(s *slot, fpath int32) (res int32, ok bool) {
	link := "/proc/self/fd/" + strconv.Itoa(int(fpath))
	rd, err := openRetry(link, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return 0, false
	}
	// The path was resolved (O_CREAT, O_EXCL, O_NOFOLLOW were applied by
	// the tries); O_TRUNC does nothing to a FIFO.
	flags := int(s.events)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOFOLLOW) | unix.O_NONBLOCK | unix.O_LARGEFILE
	fd, err := openRetry(link, flags)
	unix.Close(rd)
	if err != nil {
		return -errnoOf(err), true
	}
	if e := clearNonblock(int32(fd)); e != 0 {
		unix.Close(fd)
		return e, true
	}
	return int32(fd), true
}

// openRetry is open(2), tried again after EINTR.
func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
