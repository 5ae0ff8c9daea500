// Package minidrv is a WIA-style minidriver state machine whose
// CancelPendingIO cancels every current I/O operation at once and returns the
// driver to idle.
package minidrv
