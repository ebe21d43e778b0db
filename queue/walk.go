package queue

import (
	"bufio"
	"errors"
	"fmt"
)

// The header body's walk: one decoder of its MessagePack shape, used to
// summarize a header (nothing kept), to stream its params and environment,
// and to decode them.

// visitor receives the params and environment entries of a walk. The
// slices it is given alias the body or a scratch buffer: valid only during
// the call.
type visitor struct {
	param   func(i int, p []byte) error
	env     func(i int, name, value []byte) error
	scratch []byte // array-of-ints strings are decoded here
}

// walkStream is walkBody over a body of n bytes read from br, keeping
// nothing.
func walkStream(br *bufio.Reader, n int) (*Header, error) {
	return walk(&mpReader{src: br, n: n}, nil)
}

// walkBody checks the body's shape and returns its seq, ctime, type and
// Size; v, when not nil, is given each param and environment entry.
func walkBody(body []byte, v *visitor) (*Header, error) {
	return walk(&mpReader{b: body}, v)
}

func walk(r *mpReader, v *visitor) (*Header, error) {
	h, err := decodeBody(r, v)
	if err != nil {
		var pe *PacketError
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, &PacketError{Reason: "header body: " + err.Error()}
	}
	h.Size.Body = r.off
	return h, nil
}

func decodeBody(r *mpReader, v *visitor) (*Header, error) {
	n, err := r.mapLen()
	if err != nil {
		return nil, err
	}
	h := &Header{}
	var seen [3]bool
	for i := 0; i < n; i++ {
		k, err := r.str()
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		var idx int
		switch string(k) {
		case "seq":
			idx = 0
			h.Seq, err = r.uint()
		case "ctime":
			idx = 1
			err = decodeCTime(r, h)
		case "cmd_type":
			idx = 2
			err = decodeCmdType(r, h, v)
		default:
			return nil, fmt.Errorf("unknown key %q", k)
		}
		if err != nil {
			var pe *PacketError
			if errors.As(err, &pe) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		if seen[idx] {
			return nil, fmt.Errorf("key %q twice", k)
		}
		seen[idx] = true
	}
	for i, name := range []string{"seq", "ctime", "cmd_type"} {
		if !seen[i] {
			return nil, fmt.Errorf("missing key %q", name)
		}
	}
	if r.remaining() != 0 {
		return nil, fmt.Errorf("%d bytes after the header map", r.remaining())
	}
	return h, nil
}

func decodeCTime(r *mpReader, h *Header) error {
	n, err := r.arrayLen()
	if err != nil {
		return err
	}
	if n != 2 {
		return fmt.Errorf("array of %d elements, want [secs, nanos]", n)
	}
	if h.CTimeSecs, err = r.uint(); err != nil {
		return err
	}
	if h.CTimeNanos, err = r.uint(); err != nil {
		return err
	}
	if h.CTimeNanos >= 1e9 || h.CTimeSecs > 1<<62 {
		return fmt.Errorf("time out of range: %d s %d ns", h.CTimeSecs, h.CTimeNanos)
	}
	return nil
}

func decodeCmdType(r *mpReader, h *Header, v *visitor) error {
	c, err := r.peek()
	if err != nil {
		return err
	}
	if c&0xf0 != 0x80 && c != 0xde && c != 0xdf {
		s, err := r.str()
		if err != nil {
			return err
		}
		switch string(s) {
		case "NOP":
			h.Type = CmdNOP
		case "Fail":
			h.Type = CmdFail
		default:
			return fmt.Errorf("unknown command type %q", s)
		}
		return nil
	}
	n, err := r.mapLen()
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("map of %d entries, want {Command: ...}", n)
	}
	k, err := r.str()
	if err != nil {
		return err
	}
	if string(k) != "Command" {
		return fmt.Errorf("unknown command type %q", k)
	}
	h.Type = CmdCommand
	if n, err = r.mapLen(); err != nil {
		return err
	}
	var seen [2]bool
	for i := 0; i < n; i++ {
		k, err := r.str()
		if err != nil {
			return err
		}
		switch string(k) {
		case "params":
			if seen[0] {
				return errors.New(`key "params" twice`)
			}
			seen[0] = true
			if err := decodeParams(r, h, v); err != nil {
				return err
			}
		case "env":
			if seen[1] {
				return errors.New(`key "env" twice`)
			}
			seen[1] = true
			if err := decodeEnv(r, h, v); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown key %q in Command", k)
		}
	}
	if !seen[0] || !seen[1] {
		return errors.New("Command needs both params and env")
	}
	return nil
}

// checkEntries refuses a header with more than MaxHeaderEntries params and
// environment entries, as soon as an array announces them.
func checkEntries(h *Header, more int) error {
	if h.Size.Params+h.Size.Env+more > MaxHeaderEntries {
		return &PacketError{Reason: fmt.Sprintf("header has %d params and environment entries, more than the limit of %d (no fspl writes more)",
			h.Size.Params+h.Size.Env+more, MaxHeaderEntries)}
	}
	return nil
}

// paramVarFixed is the length of "FSPL_PARAM_" and "=" around a param's
// number and value; envVarFixed that of "FSPL_SET_" and "=".
const (
	paramVarFixed = len("FSPL_PARAM_=")
	envVarFixed   = len("FSPL_SET_=")
)

func decodeParams(r *mpReader, h *Header, v *visitor) error {
	m, err := r.arrayLen()
	if err != nil {
		return fmt.Errorf("params: %w", err)
	}
	if err := checkEntries(h, m); err != nil {
		return err
	}
	s := &h.Size
	digits, tens := 1, 10 // of j+1
	for j := 0; j < m; j++ {
		if j+1 == tens {
			digits, tens = digits+1, tens*10
		}
		if v == nil {
			// Counting only: short params of fixints (most are) are
			// taken in place, as many as are at hand, without the
			// general path's calls per param.
			if k := r.shortByteArrays(m-j, func(n int) {
				s.Params++
				s.ParamBytes += n
				s.LongestParam = max(s.LongestParam, n)
				s.LongestParamVar = max(s.LongestParamVar, paramVarFixed+digits+n)
				if j++; j+1 == tens {
					digits, tens = digits+1, tens*10
				}
			}); k > 0 {
				j-- // the loop's own increment
				continue
			}
		}
		v.nextEntry()
		p, n, err := r.byteString(v.scratchFor())
		if err != nil {
			return fmt.Errorf("params[%d]: %w", j, err)
		}
		s.Params++
		s.ParamBytes += n
		s.LongestParam = max(s.LongestParam, n)
		s.LongestParamVar = max(s.LongestParamVar, paramVarFixed+digits+n)
		if v != nil && v.param != nil {
			if err := v.param(j, p); err != nil {
				return err
			}
		}
	}
	return nil
}

func decodeEnv(r *mpReader, h *Header, v *visitor) error {
	m, err := r.arrayLen()
	if err != nil {
		return fmt.Errorf("env: %w", err)
	}
	if err := checkEntries(h, m); err != nil {
		return err
	}
	for j := 0; j < m; j++ {
		v.nextEntry()
		if l, err := r.arrayLen(); err != nil || l != 2 {
			if err == nil {
				err = fmt.Errorf("array of %d elements, want [name, value]", l)
			}
			return fmt.Errorf("env[%d]: %w", j, err)
		}
		// Name and value are appended to the scratch buffer one after
		// the other, so the value does not overwrite the name.
		name, nn, err := r.byteString(v.scratchFor())
		if err != nil {
			return fmt.Errorf("env[%d] name: %w", j, err)
		}
		val, vn, err := r.byteString(v.scratchFor())
		if err != nil {
			return fmt.Errorf("env[%d] value: %w", j, err)
		}
		s := &h.Size
		s.Env++
		s.EnvBytes += nn + vn
		s.LongestEnvVar = max(s.LongestEnvVar, envVarFixed+nn+vn)
		if v != nil && v.env != nil {
			if err := v.env(j, name, val); err != nil {
				return err
			}
		}
	}
	return nil
}

// scratchFor returns where the byte strings of one entry are decoded
// (appended, so that a name and its value do not overlap): nil, to check
// them and keep nothing, when nobody wants them.
func (v *visitor) scratchFor() *[]byte {
	if v == nil {
		return nil
	}
	return &v.scratch
}

// nextEntry starts the scratch buffer over for the next entry.
func (v *visitor) nextEntry() {
	if v != nil {
		v.scratch = v.scratch[:0]
	}
}
