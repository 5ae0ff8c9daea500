// Package release stores with release ordering only: every load and store
// before the store is visible to whoever sees its value (with an atomic
// load), but loads after it may be satisfied before it is visible, unlike
// the sequentially consistent stores of sync/atomic.
//
// It is for publishing (a slot's new state, a ring's tail or head) on hot
// paths where no goroutine relies on a store being ordered before a later
// load (Dekker's pattern needs sync/atomic). On amd64 a sync/atomic store
// is an XCHG, a full barrier that waits for the store buffer to drain (tens
// of cycles); x86's memory model already orders a plain store after every
// earlier load and store, which is what release needs, so there the store
// is a plain MOV, as the Go runtime's own StoreRel is. Elsewhere, and under
// the race detector (which must see the synchronisation), it is the
// sync/atomic store.
//
// Only a single writer at a time may store to a location through this
// package (the holder of a lock, the owner of a slot); readers load it with
// sync/atomic.
//
// Load32 is the matching load for a hot path that reads a word other
// goroutines store to (with sync/atomic or through this package) after an
// atomic load that already orders it (a ring's tail, say): on x86 a plain
// MOV, which the compiler folds into the addressing of the code around it,
// where sync/atomic's load computes the address into a register first.
// Elsewhere, and under the race detector, it is sync/atomic's load.
package release
