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

// HeldAt returns the bus number and address of the device d holds; ok is
// false when it holds none. Tests use it to tell a driver that has caught
// up with a quick unplug and replug from one still Idle on the device it
// opened before them.
func HeldAt(d *Driver) (bus, addr int, ok bool) { return d.heldAt() }
