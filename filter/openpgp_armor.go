package filter

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ASCII armor (RFC 9580 6.2) is read here, a line at a time, instead of by
// go-crypto's armor.Decode, which keeps every header in a map and appends
// each 100-byte piece of a long header line to a string: one armor header
// line of 300 MB cost 2.1 GB of memory. Here no line is kept: headers are
// skipped (nothing in them changes how the message is read), and a line
// longer than maxArmorLine is an error, so memory stays within the reader's
// buffer and time within the input's length.

// maxArmorLine bounds a line of armor: gpg writes 64 base64 characters a
// line and short headers ("Comment: ..."); RFC 9580 asks for at most 76.
const maxArmorLine = 64 << 10

const armorBegin = "-----BEGIN PGP MESSAGE-----"

// armorReader decodes the body of an armored message: Read returns its
// bytes, io.EOF at the checksum or END line (or at the end of the input,
// as go-crypto did).
type armorReader struct {
	lines *armorLines
	b64   io.Reader
}

// armorLines hands the base64 characters of the body's lines, whitespace
// removed, to the base64 decoder.
type armorLines struct {
	br   *bufio.Reader
	n    int    // lines read
	rest []byte // of the current line, not yet handed on
	done bool   // the checksum or END line was read
}

// newArmorReader reads the BEGIN line and the headers, up to the blank
// line before the body. Leading blank lines are skipped.
func newArmorReader(br *bufio.Reader) (*armorReader, error) {
	l := &armorLines{br: br}
	var line []byte
	for {
		var err error
		line, err = l.next()
		if err != nil {
			return nil, err
		}
		if len(line) > 0 {
			break
		}
	}
	if string(line) != armorBegin {
		if t, ok := strings.CutPrefix(string(line), "-----BEGIN "); ok {
			t = strings.TrimSuffix(t, "-----")
			return nil, fmt.Errorf("the armor holds a %s", quoteShort(strings.ToLower(t)))
		}
		return nil, fmt.Errorf("bad armor: line %d is not %q", l.n, armorBegin)
	}
	for {
		line, err := l.next()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if !bytes.Contains(line, []byte(":")) {
			return nil, fmt.Errorf("bad armor: line %d is neither a header (Key: Value) nor the blank line before the data", l.n)
		}
	}
	return &armorReader{lines: l, b64: base64.NewDecoder(base64.StdEncoding, l)}, nil
}

// next reads a line without its ending and surrounding whitespace: io.EOF
// at the end of the input, an error for a line over maxArmorLine.
func (l *armorLines) next() ([]byte, error) {
	line, err := l.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxArmorLine {
		return nil, fmt.Errorf("bad armor: line %d is longer than %d KiB, the limit of an armor line", l.n+1, maxArmorLine>>10)
	}
	if err == io.EOF && len(line) == 0 {
		return nil, errArmorTruncated
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	l.n++
	return bytes.TrimSpace(line), nil
}

// Read implements io.Reader for the base64 decoder.
func (l *armorLines) Read(p []byte) (int, error) {
	for len(l.rest) == 0 {
		if l.done {
			return 0, io.EOF
		}
		line, err := l.next()
		if err != nil {
			if errors.Is(err, errArmorTruncated) {
				// No END line: the packets decide whether the message
				// is complete.
				l.done = true
				return 0, io.EOF
			}
			return 0, err
		}
		switch {
		case bytes.HasPrefix(line, []byte("-----END ")), len(line) == 5 && line[0] == '=':
			// The END line, or the CRC-24 checksum before it, which is
			// not checked (RFC 9580 6.1: the MDC or AEAD tag protects the
			// data, and gpg 2.4 no longer writes it).
			l.done = true
		default:
			l.rest = line
		}
	}
	n := copy(p, l.rest)
	l.rest = l.rest[n:]
	return n, nil
}

// errArmorTruncated is the input ending inside the armor.
var errArmorTruncated = errors.New(truncatedMsg)

// Read implements io.Reader.
func (a *armorReader) Read(p []byte) (int, error) {
	n, err := a.b64.Read(p)
	var ce base64.CorruptInputError
	if errors.As(err, &ce) {
		err = fmt.Errorf("bad armor: invalid base64 data near line %d", a.lines.n)
	}
	return n, err
}

// quoteShort quotes s for an error message, cut to 40 bytes: it comes from
// the input.
func quoteShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q...", s[:40])
	}
	return fmt.Sprintf("%q", s)
}
