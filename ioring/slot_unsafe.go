package ioring

import "unsafe"

// A slot covers whole cache lines, so that its hot fields span as few as
// they can (see slotPad): the build fails here when slotSize is stale.
var _ [0]byte = [unsafe.Sizeof(slot{}) % 64]byte{}
