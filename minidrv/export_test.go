package minidrv

// Streaming reports whether d's current acquisition has reached its image
// stream: past the resynchronization and the start command, with its
// bulk-IN transfers submitted. Benchmarks use it to cancel the stream, not
// the start.
func Streaming(d *Driver) bool {
	d.mu.Lock()
	a := d.cur
	d.mu.Unlock()
	return a != nil && a.streaming.Load()
}
