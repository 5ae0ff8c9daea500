package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
)

// output is the image file. The image is written to a temporary file in
// the directory of --out and renamed over --out by commit, once the scan
// has succeeded; discard removes it. A scan that fails or is canceled
// leaves an existing --out as it was.
type output struct {
	f    *os.File // the temporary file
	name string   // --out
	done bool     // committed or discarded
}

// createOutput creates the temporary file for name. Its mode is 0644
// less the umask, as a file that os.Create made would have. An error names
// name, not the temporary file: "open scan.pgm: permission denied".
func createOutput(name string) (*output, error) {
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		// The rename at the end would fail, after the whole scan.
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	}
	dir, base := filepath.Split(name)
	for try := 0; ; try++ {
		// As much of base as the name's 255 bytes leave room for.
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.%08x.tmp", base[:min(len(base), 255-14)], rand.Uint32()))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			return &output{f: f, name: name}, nil
		}
		if errors.Is(err, fs.ErrExist) && try < 100 {
			continue
		}
		if pe, ok := errors.AsType[*fs.PathError](err); ok {
			err = pe.Err
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
}

// commit closes the temporary file and renames it over --out. On an error
// the temporary file is removed.
func (o *output) commit() error {
	o.done = true
	err := o.f.Close()
	if err == nil {
		err = os.Rename(o.f.Name(), o.name)
	}
	if err != nil {
		_ = os.Remove(o.f.Name())
		return fmt.Errorf("write %s: %w", o.name, err)
	}
	return nil
}

// discard closes and removes the temporary file, unless commit or discard
// already ran.
func (o *output) discard() {
	if o.done {
		return
	}
	o.done = true
	_ = o.f.Close()
	_ = os.Remove(o.f.Name())
}
