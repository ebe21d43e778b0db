package queue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// realPackets are packets written by fspl 1.2.2 (see testdata/packets/README).
func realPackets(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/packets/*.fspl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no packets in testdata/packets: %v", err)
	}
	m := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(f)] = b
	}
	return m
}

func TestEncodeReproducesFsplBytes(t *testing.T) {
	for name, b := range realPackets(t) {
		t.Run(name, func(t *testing.T) {
			h, off, err := DecodeHeader(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if got := Encode(h); !bytes.Equal(got, b[:off]) {
				t.Fatalf("re-encoded header differs from fspl's:\n got %x\nwant %x", got, b[:off])
			}
			h2, err := ReadHeader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("ReadHeader: %v", err)
			}
			if !bytes.Equal(Encode(h2), b[:off]) {
				t.Fatal("ReadHeader and DecodeHeader disagree")
			}
		})
	}
}

func TestDecodeRealPacketFields(t *testing.T) {
	p := realPackets(t)
	h, off, err := DecodeHeader(p["command-params-env.fspl"])
	if err != nil {
		t.Fatal(err)
	}
	if h.Seq != 41 || h.Type != CmdCommand || len(h.Params) != 2 || string(h.Params[1]) != "a2" ||
		len(h.Env) != 1 || string(h.Env[0].Name) != "FOO" || string(h.Env[0].Value) != "bar" {
		t.Fatalf("unexpected header %+v", h)
	}
	if payload := p["command-params-env.fspl"][off:]; string(payload) != "hello\n" {
		t.Fatalf("payload %q", payload)
	}
	h, _, err = DecodeHeader(p["highbytes-newline.fspl"])
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range h.Env {
		env[string(e.Name)] = string(e.Value)
	}
	if string(h.Params[0]) != "p\xc3\xa9" || env["ML"] != "line1\nline2" || env["Z"] != "1" || len(h.Params[2]) != 0 {
		t.Fatalf("unexpected header %+v", h)
	}
	for name, want := range map[string]CmdType{"nop.fspl": CmdNOP, "fail.fspl": CmdFail} {
		h, _, err := DecodeHeader(p[name])
		if err != nil || h.Type != want {
			t.Fatalf("%s: %v %v", name, h, err)
		}
	}
	h, _, err = DecodeHeader(p["bigseq-manyparams.fspl"])
	if err != nil || h.Seq != 4294967300 || len(h.Params) != 20 {
		t.Fatalf("bigseq: %+v %v", h, err)
	}
}

func TestEncodeRoundTripsArbitraryBytes(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	h := &Header{Seq: 1<<64 - 1, CTimeSecs: 1, CTimeNanos: 999999999, Params: [][]byte{all, {}, bytes.Repeat([]byte{0xff}, 70000)},
		Env: []EnvVar{{Name: []byte("A"), Value: []byte("\n\x00\xff")}}}
	got, off, err := DecodeHeader(Encode(h))
	if err != nil {
		t.Fatal(err)
	}
	if off != len(Encode(h)) || got.Seq != h.Seq || !bytes.Equal(got.Params[0], all) ||
		len(got.Params[2]) != 70000 || !bytes.Equal(got.Env[0].Value, h.Env[0].Value) {
		t.Fatalf("round trip mismatch")
	}
}

// hostile returns malformed packets derived from a valid one.
func hostile(valid []byte) map[string][]byte {
	m := map[string][]byte{}
	c := func() []byte { return append([]byte(nil), valid...) }

	b := c()
	b[0] = '!'
	m["bad-magic"] = b

	b = c()
	b[PrefixLen+2] ^= 0xff
	m["bad-body-crc"] = b

	b = c()
	b[22] ^= 1
	m["bad-prefix-crc"] = b

	b = c()
	binary.BigEndian.PutUint16(b[12:], 2)
	binary.BigEndian.PutUint32(b[26:], crc32.ChecksumIEEE(b[:26]))
	m["version-2"] = b

	m["truncated-prefix"] = c()[:17]
	m["truncated-body"] = c()[:PrefixLen+5]

	for name, n := range map[string]uint64{"len-2p63": 1 << 63, "len-max": 1<<64 - 1, "len-16MiB-truncated": MaxHeaderLen} {
		b = c()
		binary.BigEndian.PutUint64(b[14:], n)
		binary.BigEndian.PutUint32(b[26:], crc32.ChecksumIEEE(b[:26]))
		m[name] = b
	}

	// Valid framing, wrong body shapes.
	for name, body := range map[string][]byte{
		"body-array":            {0x93, 0x01, 0x02, 0x03},
		"body-huge-array":       {0xdd, 0xff, 0xff, 0xff, 0xff},
		"body-huge-map":         {0xdf, 0x7f, 0xff, 0xff, 0xff},
		"body-missing-key":      appendUint(appendStr([]byte{0x81}, "seq"), 1),
		"body-bad-cmd":          appendStr(appendUint(appendStr(appendUint(appendUint(appendArrayLen(appendStr(appendUint(appendStr([]byte{0x83}, "seq"), 1), "ctime"), 2), 1), 2), "cmd_type"), 0), "x"),
		"body-param-not-byte":   []byte("\x83\xa3seq\x01\xa5ctime\x92\x01\x02\xa8cmd_type\x81\xa7Command\x82\xa6params\x91\x91\xcd\x01\x00\xa3env\x90"),
		"body-params-claims-4G": []byte("\x83\xa3seq\x01\xa5ctime\x92\x01\x02\xa8cmd_type\x81\xa7Command\x82\xa6params\xdd\xff\xff\xff\xff"),
		"body-trailing":         append(EncodeBody(&Header{Seq: 1, Type: CmdNOP}), 0xc0),
	} {
		m[name] = frame(body)
	}
	return m
}

// frame wraps body in a valid prefix.
func frame(body []byte) []byte {
	b := make([]byte, PrefixLen)
	copy(b, Magic)
	binary.BigEndian.PutUint16(b[12:], 1)
	binary.BigEndian.PutUint64(b[14:], uint64(len(body)))
	binary.BigEndian.PutUint32(b[22:], crc32.ChecksumIEEE(body))
	binary.BigEndian.PutUint32(b[26:], crc32.ChecksumIEEE(b[:26]))
	return append(b, body...)
}

func TestDecodeRejectsHostilePackets(t *testing.T) {
	valid := realPackets(t)["command-params-env.fspl"]
	for name, b := range hostile(valid) {
		t.Run(name, func(t *testing.T) {
			_, _, err := DecodeHeader(b)
			var pe *PacketError
			if !errors.As(err, &pe) {
				t.Fatalf("DecodeHeader: want *PacketError, got %v", err)
			}
			_, err = ReadHeader(bytes.NewReader(b))
			if !errors.As(err, &pe) {
				t.Fatalf("ReadHeader: want *PacketError, got %v", err)
			}
			if strings.HasPrefix(name, "len-2p63") && !strings.Contains(err.Error(), "exceeds the limit") {
				t.Fatalf("error does not say why: %v", err)
			}
		})
	}
}

// TestReadHeaderStopsAtPayload checks that ReadHeader consumes exactly the
// header, so that the reader can be handed on positioned at the payload.
func TestReadHeaderStopsAtPayload(t *testing.T) {
	b := realPackets(t)["command-params-env.fspl"]
	r := bytes.NewReader(b)
	if _, err := ReadHeader(r); err != nil {
		t.Fatal(err)
	}
	if r.Len() != len("hello\n") {
		t.Fatalf("%d bytes left, want the 6-byte payload", r.Len())
	}
}

func TestReadHeaderAllocatesLittleForTruncatedClaim(t *testing.T) {
	b := hostile(realPackets(t)["nop.fspl"])["len-16MiB-truncated"]
	var before, after runtimeMem
	before.read()
	for i := 0; i < 100; i++ {
		_, _ = ReadHeader(bytes.NewReader(b))
	}
	after.read()
	if per := (after.total - before.total) / 100; per > 1<<20 {
		t.Fatalf("ReadHeader allocated %d bytes per call for a truncated 16 MiB claim", per)
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, b := range realPackets(f) {
		f.Add(b)
		for _, h := range hostile(b) {
			f.Add(h)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, off, err := DecodeHeader(b)
		h2, err2 := ReadHeader(bytes.NewReader(b))
		if (err == nil) != (err2 == nil) {
			t.Fatalf("DecodeHeader err %v, ReadHeader err %v", err, err2)
		}
		// The scan's streaming summary agrees with the full decode:
		// same verdict, same seq, time, type and sizes.
		var hs headerScanner
		sum, err3 := hs.summary(bytes.NewReader(b))
		if (err == nil) != (err3 == nil) {
			t.Fatalf("DecodeHeader err %v, summary err %v", err, err3)
		}
		if err == nil && (sum.Seq != h.Seq || sum.CTimeSecs != h.CTimeSecs || sum.CTimeNanos != h.CTimeNanos ||
			sum.Type != h.Type || sum.Size != h.Size || sum.Params != nil || sum.Env != nil) {
			t.Fatalf("summary %+v, full decode %+v", sum, h)
		}
		if err != nil {
			var pe *PacketError
			if !errors.As(err, &pe) {
				t.Fatalf("error is not a *PacketError: %v", err)
			}
			return
		}
		if off > len(b) {
			t.Fatalf("payload offset %d beyond input %d", off, len(b))
		}
		// Whatever decodes must re-encode to something that decodes the same.
		h3, _, err := DecodeHeader(Encode(h))
		if err != nil {
			t.Fatalf("re-encoded header does not decode: %v", err)
		}
		if !bytes.Equal(EncodeBody(h3), EncodeBody(h)) || !bytes.Equal(EncodeBody(h2), EncodeBody(h)) {
			t.Fatal("decode/encode not stable")
		}
	})
}
