package pipeline

import (
	"path/filepath"
	"slices"

	"github.com/pipespool/pipespool/stage"
)

// A stage that checks its input's integrity only at its end (a decrypter
// checking the message's MDC or signature, a decompressor its checksum)
// writes the bad data before it can say the data is bad, and the stage
// after it often fails on that data first: zstd says "checksum wrong"
// while gpg, still running, was about to say "the message was modified".
// The stage that made the bad data must be named. So when a stage fails on
// its own while such a verifying stage upstream of it is still running, the
// link into the failed stage is drained (its bytes read and thrown away)
// instead of cut with EPIPE: the stages upstream run to the end of their
// input, and a verifying stage that then fails on its own is the root cause
// (the most upstream own failure). The cost is bounded by the input's
// honest size; the root cause waits as long as the drained links or the
// verifying built-ins make progress (see pendingWait), and the job's
// timeout and signals still apply.

// verifierCommands are the programs taken to verify their input when they
// read it (decrypt, decompress): gpg always, the others when they
// decompress (-d), or under a name that always does.
var verifierCommands = map[string]bool{
	"gpg": true, "gpg2": true, "gpgv": true, "age": true,
	"zstdcat": true, "unzstd": true, "xzcat": true, "unxz": true, "zcat": true, "gunzip": true,
	"bzcat": true, "bunzip2": true, "lz4cat": true, "unlz4": true,
}

// decompressors verify their input with -d (or --decompress).
var decompressors = map[string]bool{"zstd": true, "xz": true, "gzip": true, "bzip2": true, "lz4": true, "pzstd": true, "pigz": true}

// verifiesByDefault reports whether a stage verifies its input unless the
// job file says otherwise (verifies_input): the built-ins that decrypt,
// decompress or compare a digest, and the usual external decrypters and
// decompressors.
func verifiesByDefault(s *StageSpec) bool {
	switch s.Builtin {
	case "":
	case "openpgp-decrypt", "zstd-decompress":
		return true
	case "sha256":
		_, ok := s.With["expect"]
		return ok
	default:
		return false
	}
	if s.Shell != "" || len(s.Command) == 0 {
		return false
	}
	name := filepath.Base(s.Command[0])
	if verifierCommands[name] {
		return true
	}
	return decompressors[name] && (slices.Contains(s.Command[1:], "-d") || slices.Contains(s.Command[1:], "--decompress"))
}

// verifierUpstream reports whether a stage upstream of k verifies its input.
func (r *running) verifierUpstream(k int) bool {
	for j := range k {
		if r.job.Stages[j].VerifiesInput {
			return true
		}
	}
	return false
}

// verifierRunning reports whether a stage upstream of k that verifies its
// input is still running.
func (r *running) verifierRunning(k int) bool {
	for j := range k {
		if r.job.Stages[j].VerifiesInput && !r.isOver(j) {
			return true
		}
	}
	return false
}

// drainProgress sums what the drained links and the verifying built-ins
// have moved: while it grows, the root cause keeps waiting.
func (r *running) drainProgress() int64 {
	var sum int64
	for i, st := range r.stages {
		if r.job.Stages[i].VerifiesInput && !r.isOver(i) {
			if in, _ := st.Counters(); in > 0 {
				sum += in
			}
		}
		r.mu.Lock()
		drained := r.outcomes[i].drained
		r.mu.Unlock()
		if drained {
			sum += r.links[i].pump.Bytes()
		}
	}
	return sum
}

// settleDrained reads what the drained links did, once every pump has
// finished: the stage read what was delivered before the drain and not left
// in its pipe.
func (r *running) settleDrained() {
	for i, o := range r.outcomes {
		if !o.drained {
			continue
		}
		p := r.links[i].pump
		pr := p.Result()
		p.Release()
		if r.stages[i].Kind() != stage.KindBuiltin {
			o.bytesIn = pr.Bytes - pr.Drained - pr.Unread
		}
	}
}
