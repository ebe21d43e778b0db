package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// The backup direction: what cron runs every night, `tar c | zstd -3 |
// gpg -e > backup`, against pipespool with the two built-ins, and the
// halves alone. Besides time and CPU, every variant's output size is
// measured (a faster compressor that writes a bigger backup is not a win)
// and every output is checked to decrypt and decompress, with gpg and
// zstd, to the input's bytes.

// backupTargets: the built-in chain against `zstd -T0 -3 | gpg -e -z 0`,
// what a user with cores writes.
const (
	backupMaxWall = 1.0
	backupMaxCPU  = 1.1
	backupMaxSize = 1.01
)

// backupVariant is a variant of a backup group with what the size run
// needs: the processes that write the output to stdout, and how to get
// the input back from that output.
type backupVariant struct {
	name   string
	procs  []proc // writing the output to stdout
	timed  *variant
	decode string // bash pipeline from stdin to stdout that undoes the variant
	size   int64  // output bytes, from the size run
}

// backupGroups are the groups of section 9.
func (h *harness) backupGroups() []*group {
	size := h.cfg.backupSize
	var gs []*group
	for _, mode := range []string{"pub", "sym"} {
		gs = append(gs, h.backupChainGroup(mode, size))
	}
	gs = append(gs, h.backupEncryptGroup(size), h.backupCompressGroup(size))
	return gs
}

// usrTar is a name-sorted tar of /usr cut to size bytes: the files of a
// real system, what a backup holds. Its bytes depend on the machine; the
// report says which machine it ran on.
func (h *harness) usrTar(size int64) (string, error) {
	return h.file("usr-"+sizeName(size)+".tar", func(p string) error {
		c := exec.CommandContext(h.ctx, "tar", "--sort=name", "--numeric-owner", "-C", "/", "-cf", "-", "usr")
		c.Stderr = io.Discard // unreadable files: tar says so and goes on
		r, err := c.StdoutPipe()
		if err != nil {
			return err
		}
		if err := c.Start(); err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		var n int64
		err = writeFileFrom(p, func(w io.Writer) error {
			var cerr error
			n, cerr = io.CopyN(w, r, size)
			return cerr
		})
		c.Process.Kill()
		c.Wait()
		if err == io.EOF {
			return fmt.Errorf("a tar of /usr holds only %d bytes; run with a smaller -backup-size", n)
		}
		return err
	})
}

// writeFileFrom is writeFile for a fill that takes a plain writer.
func writeFileFrom(path string, fill func(w io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// usrTarZst is usrTar compressed by zstd -3: the input of the encryptor
// in a backup chain.
func (h *harness) usrTarZst(size int64) (string, error) {
	tar, err := h.usrTar(size)
	if err != nil {
		return "", err
	}
	return h.file("usr-"+sizeName(size)+".tar.zst", func(p string) error {
		_, err := h.rn.one(h.ctx, proc{argv: []string{"zstd", "-q", "-3", "-c"}}, stdio{in: tar, out: p})
		return err
	})
}

// backupShell is a bash pipeline variant reading in and writing stdout.
func (h *harness) backupShell(name, in, script, decode string, env ...string) *backupVariant {
	p := proc{argv: []string{"bash", "-c", "exec <" + shQuote(in) + "; " + script}, env: env}
	return &backupVariant{name: name, procs: []proc{p}, decode: decode,
		timed: h.chainVariant(name, 0, "", p)}
}

// backupJob is a pipespool exec variant: timed with output none, sized
// with output "-".
func (h *harness) backupJob(name, job, in, decode string, stages ...string) (*backupVariant, error) {
	timed, err := h.jobVariant(name, job, in, stages...)
	if err != nil {
		return nil, err
	}
	body := strings.Replace(jobBody(job, in, stages...), "[output]\npath = \"none\"", "[output]\npath = \"-\"", 1)
	p, err := h.job(job+"-stdout", body)
	if err != nil {
		return nil, err
	}
	return &backupVariant{name: name, procs: []proc{p}, decode: decode, timed: timed}, nil
}

// backupMeasure runs each variant once untimed into a file: its size is
// recorded, and its output is decoded by real gpg and zstd and compared
// with the input. The variants are then added to g.
func (h *harness) backupMeasure(g *group, in string, vs ...*backupVariant) error {
	want, err := fileSHA256(in)
	if err != nil {
		return err
	}
	out := filepath.Join(h.dir, "data", g.id+".out")
	defer os.Remove(out)
	for _, v := range vs {
		if _, err := h.rn.chain(h.ctx, v.procs, 0, stdio{out: out}); err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		v.size = st.Size()
		c := exec.CommandContext(h.ctx, "bash", "-c", "set -o pipefail; exec <"+shQuote(out)+"; "+v.decode+" | sha256sum")
		c.Env = append(os.Environ(), "GNUPGHOME="+h.gnupg)
		got, err := c.Output()
		if err != nil {
			return fmt.Errorf("%s: decoding its output with %q: %w", v.name, v.decode, err)
		}
		if f := strings.Fields(string(got)); len(f) == 0 || f[0] != want {
			return fmt.Errorf("%s: its output decodes to sha256 %q, the input's is %s", v.name, got, want)
		}
		g.add(v.timed)
	}
	var cells [][]string
	base := vs[0].size
	for _, v := range vs {
		cells = append(cells, []string{v.name, strconv.FormatInt(v.size, 10), fmtMiB(v.size), fmtRatio(float64(v.size) / float64(base))})
	}
	g.notes = append(g.notes, fmt.Sprintf("Output sizes (%s), every output decoded by gpg and zstd back to the input's SHA-256:\n\n%s",
		g.id, markdownTable([]string{"variant", "bytes", "size", "ratio to the first"}, cells)))
	return nil
}

// backupChainGroup is the whole backup chain for mode "pub" (one RSA
// recipient) or "sym" (a passphrase).
func (h *harness) backupChainGroup(mode string, size int64) *group {
	how := map[string]string{"pub": "public key", "sym": "passphrase"}[mode]
	return &group{id: "backup-" + mode, section: "9. backup", needs: []string{"gpg", "zstd", "bash", "tar"}, amount: size, unit: "bytes",
		build: func(g *group) error {
			in, err := h.usrTar(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			if err := h.gpgSetup(); err != nil {
				return err
			}
			gpg := h.gpgEncrypt(mode)
			decode := shJoin(h.gpgDecrypt(mode).argv) + " | zstd -q -d -c"
			bi, err := h.backupJob("pipespool: zstd-compress (level 3) + openpgp-encrypt ("+how+") built-ins", "backup-"+mode, in, decode,
				"builtin = \"zstd-compress\"\n[stage.with]\nlevel = 3", h.pgpWith("openpgp-encrypt", mode))
			if err != nil {
				return err
			}
			one := h.backupShell("zstd -3 | gpg -z 0 ("+how+", bash)", in, "zstd -q -3 -c | "+shJoin(gpg.argv), decode, gpg.env...)
			t0 := h.backupShell("zstd -T0 -3 | gpg -z 0 ("+how+", bash)", in, "zstd -q -T0 -3 -c | "+shJoin(gpg.argv), decode, gpg.env...)
			vs := []*backupVariant{t0, bi, one}
			var ext *backupVariant
			if mode == "pub" {
				ext, err = h.backupJob("pipespool exec zstd -T0 -3 -> gpg -e -z 0", "backup-external", in, decode,
					tomlArgv("zstd", "-q", "-T0", "-3", "-c"),
					tomlArgv(gpg.argv...)+"\nenv = { GNUPGHOME = "+strconv.Quote(h.gnupg)+" }")
				if err != nil {
					return err
				}
				vs = append(vs, ext)
			}
			if err := h.backupMeasure(g, in, vs...); err != nil {
				return err
			}
			tg := target{desc: fmt.Sprintf("<= %.2fx, CPU <= %.2fx, size <= %.2fx, RSS < 96 MiB", backupMaxWall, backupMaxCPU, backupMaxSize),
				maxRatio: backupMaxWall, maxCPURatio: backupMaxCPU, maxRSS: builtinRSS}
			tg.sizeRatio, tg.maxSizeRatio = float64(bi.size)/float64(t0.size), backupMaxSize
			g.compare(bi.name, t0.name, tg)
			g.compare(bi.name, one.name, target{desc: "RSS < 96 MiB", maxRSS: builtinRSS})
			g.compare(one.name, t0.name, target{})
			if ext != nil {
				// Its peak RSS is zstd -T0's (the largest process), not
				// pipespool's: no RSS target.
				g.compare(ext.name, t0.name, target{})
			}
			return nil
		}}
}

// backupEncryptGroup is the encryptor alone on the compressed tar: the
// built-in against gpg -e -z 0, on CPU.
func (h *harness) backupEncryptGroup(size int64) *group {
	return &group{id: "backup-encrypt", section: "9. backup", needs: []string{"gpg", "zstd", "bash", "tar"}, amount: size, unit: "bytes",
		build: func(g *group) error {
			in, err := h.usrTarZst(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			if err := h.gpgSetup(); err != nil {
				return err
			}
			gpg := h.gpgEncrypt("pub")
			decode := shJoin(h.gpgDecrypt("pub").argv)
			base := h.backupShell("gpg -e -z 0 (compressed tar)", in, shJoin(gpg.argv), decode, gpg.env...)
			bi, err := h.backupJob("openpgp-encrypt built-in (public key, compressed tar)", "backup-encrypt", in, decode, h.pgpWith("openpgp-encrypt", "pub"))
			if err != nil {
				return err
			}
			if err := h.backupMeasure(g, in, base, bi); err != nil {
				return err
			}
			g.compare(bi.name, base.name, target{desc: "CPU <= 1.00x, RSS < 96 MiB", maxCPURatio: 1.0, maxRSS: builtinRSS})
			return nil
		}}
}

// backupCompressGroup is the compressor alone on the tar.
func (h *harness) backupCompressGroup(size int64) *group {
	return &group{id: "backup-compress", section: "9. backup", needs: []string{"zstd", "bash", "tar"}, amount: size, unit: "bytes",
		build: func(g *group) error {
			in, err := h.usrTar(size)
			if err != nil {
				return err
			}
			g.warm = append(g.warm, in)
			decode := "zstd -q -d -c"
			t0 := h.backupShell("zstd -T0 -3 (tar)", in, "zstd -q -T0 -3 -c", decode)
			one := h.backupShell("zstd -3 (tar)", in, "zstd -q -3 -c", decode)
			bi, err := h.backupJob("zstd-compress built-in (level 3, tar)", "backup-compress", in, decode,
				"builtin = \"zstd-compress\"\n[stage.with]\nlevel = 3")
			if err != nil {
				return err
			}
			if err := h.backupMeasure(g, in, t0, bi, one); err != nil {
				return err
			}
			g.compare(bi.name, t0.name, target{desc: "RSS < 96 MiB", maxRSS: builtinRSS})
			g.compare(bi.name, one.name, target{})
			return nil
		}}
}
