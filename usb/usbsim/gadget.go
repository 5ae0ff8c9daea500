package usbsim

import (
	"os"
	"slices"
	"syscall"
)

// Gadget is the device side of a USB gadget whose one function has the
// scanner's three endpoints as FunctionFS files (bulk IN, bulk OUT,
// interrupt IN), bound to a USB device controller: what ServeGadget serves
// the scanner through. *usbvm.Gadget, the test guest's configfs gadget, is
// one; usbsim does not import it, so its users do not link test helpers.
type Gadget interface {
	// EndpointFiles returns the FunctionFS endpoint files, which the Gadget
	// keeps owning: bulk IN, bulk OUT, interrupt IN. They must stay open
	// until the Scanner is closed.
	EndpointFiles() (bulkIn, bulkOut, intrIn *os.File)
	// ControlFile returns FunctionFS's ep0 file, which the Gadget keeps
	// owning, with its descriptors written and their flags including
	// FUNCTIONFS_ALL_CTRL_RECIP (so that vendor requests to the device
	// reach it, not only those to its interface), or nil: then the
	// scanner answers no vendor requests and the host's wait until their
	// timeout. The Scanner reads its events and answers its setup
	// requests while plugged in.
	ControlFile() *os.File
	// Plug binds the gadget to its controller: the host sees the device
	// arrive and enumerates it. Unplug unbinds it: the host sees it leave
	// and the endpoints' pending I/O fails. The Scanner calls them one at a
	// time.
	Plug() error
	Unplug() error
	// BulkMaxPacket returns the bulk endpoints' wMaxPacketSize at the
	// current link speed (64 at full speed, 512 at high speed). It may be
	// called from any goroutine.
	BulkMaxPacket() int
}

// ffsOp is the blocking call a gadget endpoint's goroutine is in.
type ffsOp uint8

const (
	ffsIdle ffsOp = iota // not in a call on the endpoint file
	ffsData              // a transfer: write on an IN file, read on bulk OUT
	ffsHalt              // halting the endpoint (the wrong-direction call)
)

// ffsEndpoint is the gadget transport's side of one endpoint: a FunctionFS
// file served by one goroutine locked to its OS thread, so that a signal to
// that thread withdraws its blocking call (FunctionFS dequeues the request
// and the call fails with EINTR).
type ffsEndpoint struct {
	file *os.File        // owned by the Gadget
	rc   syscall.RawConn // of file
	tid  int             // the serving goroutine's thread, 0 before it runs; guarded by Scanner.mu
	op   ffsOp           // the blocking call in progress; guarded by Scanner.mu
	// late, set by the tests, runs in ffsEP0 between setting a wait's
	// deadline and the wait: a goroutine that runs late.
	late func()
}

// ffsMustStopLocked reports whether the blocking call in progress on ep of
// plug-in p must be withdrawn: the plug-in is gone, or bulk OUT must not
// take a message while the device hangs or a stall waits to be set (bulk
// OUT halts whatever is queued). An IN write stays, as a message already in
// a socket does on the socketpair transport: the host gets it before a hang
// or a stall shows. The controller may hold it already: dummy_hcd, like
// real controllers, completes a short IN request into its FIFO at once, and
// refuses to halt the endpoint (EAGAIN) until the host has read it.
func (s *Scanner) ffsMustStopLocked(p *plug, ep *endpoint) bool {
	switch {
	case ep.ffs.op == ffsIdle:
		return false
	case s.plug != p:
		return true
	}
	return ep == p.out && ep.ffs.op == ffsData && (s.hung || ep.halted)
}

// StallErrors returns why endpoint 0 did not stall the requests the gadget
// refused, since ServeGadget: each is a request FunctionFS did not stall
// when asked (the call's error), which the host then waited on until its
// timeout. It is empty while every refusal stalled, and always for the
// socketpair transport. For tests, to tell such a failure from the host's.
func (s *Scanner) StallErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.stallErrs)
}

// AnswersTaken returns how many answers to control IN requests endpoint 0
// wrote in full since ServeGadget. Always 0 for the socketpair transport.
// For tests: each of them reached a request of the host, so a host that
// got fewer right answers lost one; the gadget rig can answer a request
// with something else instead (see ErrAnswerNotTaken), which is not a
// lost answer.
func (s *Scanner) AnswersTaken() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answersTaken
}

// DataStageErrors returns, since ServeGadget, why endpoint 0 failed the
// data stages of control requests it had accepted. For an OUT request each
// is the error of the read that should have taken the host's data, after
// which the request was dropped, or ErrShortDataStage for a read that took
// fewer bytes than the request's wLength; for an IN request,
// ErrAnswerNotTaken with the error of the write of its answer. A host that
// abandons a request (its timeout or cancel) fails the read or the write
// too, so an entry is not by itself a fault; it says why the gadget did
// not act on, or answer, a request the host sent. Unplugging is not
// recorded. Always empty for the socketpair transport. For tests, to
// explain a control transfer that went wrong.
func (s *Scanner) DataStageErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dataErrs)
}
