package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/pipespool/pipespool/filter"
)

// DecodeStep is one decoder: a shell command (run as $SHELL -c, like fspl)
// or a built-in filter.
type DecodeStep struct {
	Shell   string        // shell command, when Builtin is ""
	Builtin string        // name of the built-in ("zstd")
	filter  filter.Filter // the built-in's filter
	// verifies: the step fails a message not signed by the key it
	// requires, which it can tell only at the message's end.
	verifies bool
}

// OpenPGP is the filter of the built-in "openpgp" decoder and its policy.
type OpenPGP struct {
	Filter filter.Filter
	// RequireSigned: Filter fails, at the end of a message, unless a
	// required key signed it (require_signed_by). Then nothing of a
	// packet is used before the whole of it has been verified (Verify).
	RequireSigned bool
}

// Decoder turns a stored job file into a packet: the steps run in order,
// the first reading the job file from its start. An empty Decoder means the
// job files are packets as they are.
type Decoder struct {
	Steps []DecodeStep
	// Shell runs shell steps; fspl uses $SHELL, and so does ParseDecoders
	// (/bin/sh when $SHELL is unset).
	Shell string
	// Stderr receives the shell steps' stderr (os.Stderr when nil).
	Stderr io.Writer
	// MayOutlive names the programs the shell steps may leave running
	// (a gpg-agent) when the decoder runs outside a job (a scan, a
	// listing, stdin-info); in a job, ProcessOptions.MayOutlive does.
	// Logger says what else they left running and was stopped; nil
	// discards.
	MayOutlive []string
	Logger     *slog.Logger
}

// ParseDecoders builds a Decoder from -d values, in order. "zstd" is the
// built-in zstd decompressor, "openpgp" the built-in OpenPGP decrypter
// whose filter (with its key and policy) openpgp returns, called once and
// only when "openpgp" is among specs; anything else is a shell command.
func ParseDecoders(specs []string, openpgp func() (OpenPGP, error)) (*Decoder, error) {
	d := &Decoder{Shell: os.Getenv("SHELL")}
	if d.Shell == "" {
		d.Shell = "/bin/sh"
	}
	for _, s := range specs {
		switch s {
		case "":
			return nil, errors.New("-d: empty decoder")
		case "zstd":
			d.Steps = append(d.Steps, DecodeStep{Builtin: s, filter: zstdFilter()})
		case "openpgp":
			if openpgp == nil {
				return nil, errors.New("-d openpgp: no decryption key: put a [decoder.openpgp] table in the job file")
			}
			o, err := openpgp()
			if err != nil {
				return nil, err
			}
			d.Steps = append(d.Steps, DecodeStep{Builtin: s, filter: o.Filter, verifies: o.RequireSigned})
			openpgp = func() (OpenPGP, error) { return o, nil }
		default:
			d.Steps = append(d.Steps, DecodeStep{Shell: s})
		}
	}
	return d, nil
}

// zstdFilter is the zstd-decompress built-in when the filter package has it,
// else klauspost's decoder directly.
func zstdFilter() filter.Filter {
	if f, ok := filter.Lookup("zstd-decompress"); ok {
		if filt, err := f(map[string]any{}, "."); err == nil {
			return filt
		}
	}
	return filter.Func(func(ctx context.Context, r io.Reader, w io.Writer) error {
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return err
		}
		defer zr.Close()
		_, err = io.Copy(w, zr)
		return err
	})
}

// runsShell reports whether a step of d is a shell command.
func (d *Decoder) runsShell() bool {
	if d == nil {
		return false
	}
	for _, s := range d.Steps {
		if s.Builtin == "" {
			return true
		}
	}
	return false
}

// Empty reports whether d decodes nothing (nil or no steps).
func (d *Decoder) Empty() bool { return d == nil || len(d.Steps) == 0 }

// String describes the decoder for logs.
func (d *Decoder) String() string {
	if d.Empty() {
		return "none"
	}
	var parts []string
	for _, s := range d.Steps {
		if s.Builtin != "" {
			parts = append(parts, "builtin:"+s.Builtin)
		} else {
			parts = append(parts, s.Shell)
		}
	}
	return strings.Join(parts, " | ")
}
