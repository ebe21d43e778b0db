package pipeline

import (
	"errors"
	"testing"
)

// FuzzReviewLoadTree: any job file accepted is run as written. A job that
// does not fan out is run as a line, which writes the job's [output]: a
// stage's own output (output = "PATH") must then be that [output], or the
// job must be refused; a tree's outputs must be distinct files. The seed
// corpus alone fails: a line whose last stage says output = "x" is
// accepted and its output ignored (the run writes stdout).
func FuzzReviewLoadTree(f *testing.F) {
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\noutput = \"x\"\n"))
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\ncommand = [\"cat\"]\noutput = \"x\"\n[[stage]]\nname = \"c\"\nfrom = \"a\"\ncommand = [\"cat\"]\noutput = \"y\"\noptional = true\n"))
	f.Add([]byte("[[stage]]\nname = \"a\"\ncommand = [\"cat\"]\n[[stage]]\nname = \"b\"\nfrom = \"a\"\ncommand = [\"cat\"]\noutput = \"x\"\noutput_mode = \"0600\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		job, err := Parse("/tmp/fuzz.toml", data)
		if err != nil {
			var je *JobError
			if !errors.As(err, &je) {
				t.Fatalf("error is %T, not *JobError: %v", err, err)
			}
			return
		}
		if !job.FansOut() {
			for _, s := range job.Stages {
				if s.Output != "" && s.Output != job.Output {
					t.Fatalf("a line whose stage %q says output = %q is accepted, but the run writes [output] %q", s.Name, s.Output, job.Output)
				}
			}
			return
		}
		var outs []namedOutput
		for _, s := range job.Stages {
			if s.Output != "" {
				outs = append(outs, namedOutput{Path: s.Output})
			}
		}
		if a, b, ok := sameOutput(outs, "/nonexistent-review-dir"); ok {
			t.Fatalf("two branches write one file: %q and %q", a.Path, b.Path)
		}
	})
}
