//go:build !linux

package ioring

// The socket and file operations are Linux's (ops_sock.go, ops_file.go):
// elsewhere no Ring can be made (New returns ErrNotSupported), so their
// argument checks are never reached; these keep the descriptor table whole.

func checkMsgFlags(Op) error { return ErrNotSupported }
func checkMsg(Op) error      { return ErrNotSupported }
func checkAccept(Op) error   { return ErrNotSupported }
func checkConnect(Op) error  { return ErrNotSupported }
func checkShutdown(Op) error { return ErrNotSupported }
func checkOpenAt(Op) error   { return ErrNotSupported }
func checkStatx(Op) error    { return ErrNotSupported }
func checkFixed(Op) error    { return ErrNotSupported }

// fillArg has no argument of its own to build where there are no socket
// operations, nor a Msg to claim.
func (r *Ring) fillArg(*slot, *Op, uint64) {}
func claimArg(*Op) bool                    { return true }
func unclaimArg(*Op)                       {}

// errnoRestartSys is Linux's internal ERESTARTSYS; no kernel elsewhere
// reports it here.
const errnoRestartSys sysErrno = 512

// backendStats adds nothing: no backend runs here.
func (r *Ring) backendStats(*Stats) {}

func checkRecvMultishot(Op) error { return ErrNotSupported }

// The kernel's side of BufRing and of the registered files: no Ring is
// made here, so these are never reached.
func (r *Ring) newKernelBufRing(*BufRing) (kernelBufRing, error) { return nil, ErrNotSupported }
func (r *Ring) registerFiles([]int32) error                      { return ErrNotSupported }
func (r *Ring) unregisterFiles() error                           { return ErrNotSupported }
func (r *Ring) closeFiles()                                      {}
func (r *Ring) heldFile(int32) int32                             { return -1 }

// dupOwn and closeOwnFD are never reached where no Ring can be made.
func dupOwn(int32) int32 { return -1 }
func closeOwnFD(int32)   {}
