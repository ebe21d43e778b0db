package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// tomlError turns go-toml's errors into a *JobError with the line and key.
// pos (from indexPositions) names a key inside the n-th [[stage]]
// "stage[n].key", as validation errors do.
func tomlError(file string, err error, data []byte, pos map[string]int) *JobError {
	var sme *toml.StrictMissingError
	if errors.As(err, &sme) && len(sme.Errors) > 0 {
		de := sme.Errors[0]
		line, _ := de.Position()
		key := strings.Join(de.Key(), ".")
		if rest, ok := strings.CutPrefix(key, "stage."); ok {
			// The last [[stage]] header at or above the line owns it.
			for n := 1; pos[stageKey(n, "")] > 0 && pos[stageKey(n, "")] <= line; n++ {
				key = stageKey(n, rest)
			}
		}
		return &JobError{File: file, Line: line, Key: key,
			Msg: "unknown key: check its spelling against docs/job-file.md"}
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		return &JobError{File: file, Line: line, Key: strings.Join(de.Key(), "."), Msg: msg}
	}
	var pe *unstable.ParserError
	if errors.As(err, &pe) {
		line := 0
		if off, ok := offsetIn(data, pe.Highlight); ok {
			line = bytes.Count(data[:off], []byte{'\n'}) + 1
		}
		return &JobError{File: file, Line: line, Msg: pe.Error()}
	}
	return &JobError{File: file, Msg: err.Error()}
}

// indexPositions maps the dotted keys of a document to the lines where
// they are set, naming the n-th [[stage]] "stage[n]": validation errors
// found after decoding can then point at a line.
func indexPositions(data []byte) (map[string]int, error) {
	pos := map[string]int{}
	arrayCount := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	line := func(n *unstable.Node) int {
		if n == nil {
			return 0
		}
		if off, ok := offsetIn(data, n.Data); ok {
			return bytes.Count(data[:off], []byte{'\n'}) + 1
		}
		if n.Raw.Length > 0 || n.Raw.Offset > 0 {
			return p.Shape(n.Raw).Start.Line
		}
		return 0
	}
	keyOf := func(n *unstable.Node) (string, *unstable.Node) {
		it := n.Key()
		var parts []string
		var first *unstable.Node
		for it.Next() {
			if first == nil {
				first = it.Node()
			}
			parts = append(parts, string(it.Node().Data))
		}
		return strings.Join(parts, "."), first
	}
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			k, first := keyOf(e)
			// [stage.with] after the n-th [[stage]] belongs to stage[n].
			if strings.HasPrefix(k, "stage.") && arrayCount["stage"] > 0 {
				k = stageKey(arrayCount["stage"], strings.TrimPrefix(k, "stage."))
			}
			prefix = k
			pos[k] = line(first)
		case unstable.ArrayTable:
			k, first := keyOf(e)
			arrayCount[k]++
			prefix = fmt.Sprintf("%s[%d]", k, arrayCount[k])
			pos[prefix] = line(first)
		case unstable.KeyValue:
			k, first := keyOf(e)
			if prefix != "" {
				k = prefix + "." + k
			}
			pos[k] = line(first)
		}
	}
	return pos, p.Error()
}

// offsetIn returns the offset of sub in data if sub is a slice of data.
func offsetIn(data, sub []byte) (int, bool) {
	if len(sub) == 0 || len(data) == 0 {
		return 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(data)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	if p < base || p >= base+uintptr(len(data)) {
		return 0, false // an unescaped copy, not the input
	}
	return int(p - base), true
}
