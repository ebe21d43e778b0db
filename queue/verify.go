package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/pipespool/pipespool/fsutil"
)

// A decoder step that requires a signature (openpgp with require_signed_by)
// can tell that a message is unsigned, or signed by another key, only at
// its end, after the whole plaintext has gone by: the packet's params and
// environment at its start, and its payload, would by then have reached
// the command. So when the decoder verifies, every packet is verified
// first, in a pass of its own through the decoder with the plaintext
// discarded, and only then decoded again and used. The two passes must read
// the same bytes: a job file that somebody else could rewrite in between
// (not ours, or writable by others), and stdin, which can be read only
// once, are first copied to a private file that nobody else can reach.

// Verifies reports whether a step of d verifies a signature, so that
// packets must be verified (Verify) before anything of them is used.
func (d *Decoder) Verifies() bool {
	if d == nil {
		return false
	}
	for _, s := range d.Steps {
		if s.verifies {
			return true
		}
	}
	return false
}

// UnverifiedError is a packet whose signature the decoder did not verify
// (missing, by another key, bad), or that could not be decoded to its end:
// nothing of it was used.
type UnverifiedError struct {
	Err error
}

func (e *UnverifiedError) Error() string {
	return "not verified, nothing of it was used: " + e.Err.Error()
}

func (e *UnverifiedError) Unwrap() error { return e.Err }

// ExitCode is 1: the packet is refused, as a failed job is.
func (e *UnverifiedError) ExitCode() int { return 1 }

// Verify decodes in from its start with the steps of d up to the last one
// that verifies, discards the output, and returns an *UnverifiedError when
// any of them failed (an interruption is returned as the context's cause).
// It does nothing when d does not verify.
func (d *Decoder) Verify(ctx context.Context, in *os.File) error {
	last := -1
	for i, s := range d.Steps {
		if s.verifies {
			last = i
		}
	}
	if last < 0 {
		return nil
	}
	// The steps before the verifying one run as usual; the verifying one
	// (a built-in) runs here, writing nowhere: no pipe to copy the
	// plaintext through just to throw it away.
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	src := in
	var pre *Stream
	if last > 0 {
		var err error
		sub := *d
		sub.Steps = d.Steps[:last]
		pre, err = sub.StartStream(ctx, in)
		if err != nil {
			return fmt.Errorf("start the decoder to verify: %w", err)
		}
		src = pre.Out
	}
	step := d.Steps[last]
	err := step.filter.Run(ctx, src, io.Discard)
	if err != nil {
		err = fmt.Errorf("decoder %q: %w", step.Builtin, err)
	}
	if pre != nil {
		// Stopped when the verifying step stopped early: a step that
		// failed on its own is still named, before it.
		var perr error
		if err != nil {
			perr = pre.Stop()
		} else {
			perr = pre.Wait()
		}
		switch {
		case perr != nil && err != nil:
			err = fmt.Errorf("%w (then %w)", perr, err)
		case perr != nil:
			err = perr
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		return &UnverifiedError{Err: err}
	}
	return nil
}

// verifiedJob verifies job file f when dec verifies, and returns what the
// job is then to be read from: f itself when nobody but pipespool's user
// (or root) can change it, else a private copy made before the
// verification (the caller closes it when it is not f).
func verifiedJob(ctx context.Context, dec *Decoder, dir string, f *os.File) (*os.File, error) {
	if !dec.Verifies() {
		return f, nil
	}
	src := f
	if othersMayWrite(f) {
		c, err := privateCopy(dir, f)
		if err != nil {
			return nil, fmt.Errorf("copy the job file to verify it: %w", err)
		}
		src = c
	}
	err := dec.Verify(ctx, src)
	if err == nil {
		_, err = src.Seek(0, io.SeekStart)
	}
	if err != nil {
		if src != f {
			src.Close()
		}
		return nil, err
	}
	return src, nil
}

// othersMayWrite reports whether somebody other than pipespool's user or
// root may write f: its owner, or anyone its group or world write bits
// (and so an ACL's mask) let in. Unknown is yes.
func othersMayWrite(f *os.File) bool {
	var st unix.Stat_t
	if err := unix.Fstat(rawFD(f), &st); err != nil {
		return true
	}
	owner := st.Uid == uint32(os.Geteuid()) || st.Uid == 0
	return !owner || st.Mode&0o022 != 0
}

// privateCopy copies r, from its offset to its end, to a new file in dir
// that no other user can open and no name leads to (O_TMPFILE, or a random
// name unlinked at once where the file system lacks it), and returns it
// positioned at its start. Closing it frees its space.
func privateCopy(dir string, r *os.File) (*os.File, error) {
	f, err := fsutil.Open(dir, os.O_RDWR|unix.O_TMPFILE, 0o600)
	if err != nil {
		// Not every file system has O_TMPFILE.
		var rnd [8]byte
		rand.Read(rnd[:])
		name := filepath.Join(dir, ".pipespool-spool-"+hex.EncodeToString(rnd[:]))
		if f, err = fsutil.CreateExclusive(name, os.O_RDWR, 0o600); err != nil {
			return nil, err
		}
		os.Remove(name)
	}
	if _, err := CopyFile(f, r); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool to %s: %w", dir, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
