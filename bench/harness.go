package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// config is what the flags chose: how big each case's data is and how
// many runs it gets.
type config struct {
	short     bool
	runs      int // default rounds per group
	runsFlag  int // -runs: rounds of every group, overriding the rest
	out       string
	cases     *regexp.Regexp
	keep      bool
	noInstall bool
	tmpDir    string

	relaySize   int64   // relay and 4-stage cases
	scaleSizes  []int64 // the relay again, to see time grow and RSS not
	mixSize     int64   // zstd input, the restore chain's plaintext
	pgpSize     int64   // OpenPGP en- and decryption
	payloadSize int64   // queue-process payload, prepare input
	backupSize  int64   // the backup chain's input (a tar of /usr)
	packets     int     // tiny packets
	idle        time.Duration
}

func newConfig(short bool) config {
	if short {
		return config{
			short: true, runs: 3,
			relaySize:   256 << 20,
			scaleSizes:  []int64{32 << 20, 256 << 20, 1 << 30},
			mixSize:     128 << 20,
			pgpSize:     128 << 20,
			payloadSize: 512 << 20,
			backupSize:  256 << 20,
			packets:     300,
			idle:        5 * time.Second,
		}
	}
	return config{
		runs:        5,
		relaySize:   1 << 30,
		scaleSizes:  []int64{100 << 20, 1 << 30, 4 << 30},
		mixSize:     1 << 30,
		pgpSize:     1 << 30,
		payloadSize: 2 << 30,
		backupSize:  1 << 30,
		packets:     2000,
		idle:        30 * time.Second,
	}
}

// harness holds what every case shares: the binaries it built, the work
// directory, the peers found, and the data files prepared so far.
type harness struct {
	cfg      config
	ctx      context.Context
	root     string // the module's root directory
	dir      string // the work directory, removed at the end
	pp       string // the pipespool binary built for this run
	iocopy   string // the plain io.Copy relay
	teerelay string // the pump-level fan-out and relay (bench/teerelay)
	pauser   string // the consumer that reads and pauses in turns
	gnupg    string // GNUPGHOME with the test keys imported, "" until needed
	rn       runner
	tools    map[string]string
	files    map[string]string // prepared data, by name
	skipped  []string
	log      func(format string, args ...any)
}

// peers are the tools the cases compare against, with the Debian package
// that provides each.
var peers = []struct{ name, pkg string }{
	{"pv", "pv"}, {"mbuffer", "mbuffer"}, {"fspl", "filespooler"},
	{"zstd", "zstd"}, {"gpg", "gnupg"}, {"bash", "bash"},
	{"time", "time"}, // GNU time(1), for peak RSS (see runner)
	{"nncp-exec", "nncp"},
	{"tar", "tar"},
	{"pipexec", "pipexec"}, {"ptee", "pipexec"},
}

// findPeers looks every peer up in PATH; missing ones are installed with
// apt-get when running as root (unless -no-install), else their cases are
// skipped and named in the report.
func (h *harness) findPeers() {
	h.tools = map[string]string{}
	var missing []string
	for _, p := range peers {
		if path, err := exec.LookPath(p.name); err == nil {
			h.tools[p.name] = path
		} else {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) > 0 && os.Geteuid() == 0 && !h.cfg.noInstall {
		if _, err := exec.LookPath("apt-get"); err == nil {
			h.log("installing %s with apt-get", strings.Join(missing, " "))
			c := exec.CommandContext(h.ctx, "apt-get", append([]string{"install", "-y", "-q"}, missing...)...)
			c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			c.Stdout, c.Stderr = os.Stderr, os.Stderr
			if err := c.Run(); err != nil {
				h.log("apt-get install failed: %v", err)
			}
			for _, p := range peers {
				if path, err := exec.LookPath(p.name); err == nil {
					h.tools[p.name] = path
				}
			}
		}
	}
}

// gnuTime returns GNU time's path if it is there and works.
func (h *harness) gnuTime() string {
	t := h.tools["time"]
	if t == "" || exec.Command(t, "-f", "%M", "-o", os.DevNull, "true").Run() != nil {
		return ""
	}
	return t
}

// has reports whether every named peer was found.
func (h *harness) has(names ...string) bool {
	for _, n := range names {
		if h.tools[n] == "" {
			return false
		}
	}
	return true
}

// build compiles pipespool, the io.Copy relay and the pauser into the work directory,
// once, so that no case pays for compilation.
func (h *harness) build() error {
	bin := filepath.Join(h.dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	h.pp = filepath.Join(bin, "pipespool")
	h.iocopy = filepath.Join(bin, "iocopy")
	h.teerelay = filepath.Join(bin, "teerelay")
	h.pauser = filepath.Join(bin, "pauser")
	for _, b := range []struct{ out, pkg string }{{h.pp, "./cmd/pipespool"}, {h.iocopy, "./bench/iocopy"}, {h.pauser, "./bench/pauser"}, {h.teerelay, "./bench/teerelay"}} {
		// Built as docs/install.md says: static, so that the start-up
		// measured is that of the binary users install.
		c := exec.CommandContext(h.ctx, "go", "build", "-trimpath", "-o", b.out, b.pkg)
		c.Dir = h.root
		c.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// moduleRoot is the directory of the go.mod that holds this harness.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the harness from inside the pipespool module: go run ./bench")
	}
	return filepath.Dir(mod), nil
}

// file returns the path of the prepared data file name, making it with
// create the first time it is asked for.
func (h *harness) file(name string, create func(path string) error) (string, error) {
	if p, ok := h.files[name]; ok {
		return p, nil
	}
	path := filepath.Join(h.dir, "data", name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	if err := create(path); err != nil {
		return "", fmt.Errorf("preparing %s: %w", name, err)
	}
	h.log("prepared %s in %.1f s", name, time.Since(start).Seconds())
	h.files[name] = path
	return path, nil
}

// randomFile is size random bytes. Sizes that are a multiple of 1 GiB
// repeat the 1 GiB file (copy_file_range, no CPU spent generating): a
// relay does not care, and the page cache holds one less copy.
func (h *harness) randomFile(size int64) (string, error) {
	if size > 1<<30 && size%(1<<30) == 0 {
		one, err := h.randomFile(1 << 30)
		if err != nil {
			return "", err
		}
		return h.file("random-"+sizeName(size), func(p string) error { return repeatFile(p, one, size>>30) })
	}
	return h.file("random-"+sizeName(size), func(p string) error { return writeRandom(p, size) })
}

// runsFor is how many rounds group g gets.
func (h *harness) runsFor(g *group) int {
	switch {
	case h.cfg.runsFlag > 0:
		return h.cfg.runsFlag
	case g.runs > 0 && !h.cfg.short:
		return g.runs
	case g.runs == 1: // the idle case runs once in any mode
		return 1
	}
	return h.cfg.runs
}

func (h *harness) mixFile(size int64) (string, error) {
	return h.file("mix-"+sizeName(size), func(p string) error { return writeMix(p, size) })
}

// zstFile is the mix compressed by the zstd CLI at its default level.
func (h *harness) zstFile(size int64) (string, error) {
	mix, err := h.mixFile(size)
	if err != nil {
		return "", err
	}
	return h.file("mix-"+sizeName(size)+".zst", func(p string) error {
		_, err := h.rn.one(h.ctx, proc{argv: []string{"zstd", "-q", "-c"}}, stdio{in: mix, out: p})
		return err
	})
}

// gpgFile is src encrypted by gpg to the recipient key ("pub") or with
// the symmetric passphrase ("sym"), uncompressed, AES-256.
func (h *harness) gpgFile(src, mode string) (string, error) {
	if err := h.gpgSetup(); err != nil {
		return "", err
	}
	return h.file(filepath.Base(src)+"."+mode+".gpg", func(p string) error {
		_, err := h.rn.one(h.ctx, h.gpgEncrypt(mode), stdio{in: src, out: p})
		return err
	})
}

func (h *harness) key(name string) string {
	return filepath.Join(h.root, "testdata", "keys", name)
}

// gpgSetup makes a private GNUPGHOME holding the recipient's secret key,
// so that gpg never touches the user's keyring.
func (h *harness) gpgSetup() error {
	if h.gnupg != "" {
		return nil
	}
	home := filepath.Join(h.dir, "gnupg")
	if err := os.Mkdir(home, 0o700); err != nil {
		return err
	}
	h.gnupg = home
	p := proc{argv: []string{"gpg", "--batch", "--quiet", "--pinentry-mode", "loopback",
		"--passphrase-file", h.key("recipient.pass"), "--import", h.key("recipient.sec.asc")},
		env: []string{"GNUPGHOME=" + home}}
	_, err := h.rn.one(h.ctx, p, stdio{})
	return err
}

// gpgStop stops the gpg-agent that our gpg calls started.
func (h *harness) gpgStop() {
	if h.gnupg == "" {
		return
	}
	c := exec.Command("gpgconf", "--kill", "all")
	c.Env = append(os.Environ(), "GNUPGHOME="+h.gnupg)
	c.Run()
}

func (h *harness) gpgBase() []string {
	return []string{"gpg", "--batch", "--quiet", "--no-tty", "--pinentry-mode", "loopback"}
}

// gpgEncrypt encrypts stdin to stdout the way the built-in does: AES-256,
// no compression (gpg compresses by default, the built-in never does).
func (h *harness) gpgEncrypt(mode string) proc {
	argv := append(h.gpgBase(), "--compress-algo", "none", "--cipher-algo", "AES256")
	if mode == "pub" {
		argv = append(argv, "--trust-model", "always", "-r", "recipient@pipespool.invalid", "--encrypt")
	} else {
		argv = append(argv, "--passphrase-file", h.key("symmetric.pass"), "--symmetric")
	}
	return proc{argv: argv, env: []string{"GNUPGHOME=" + h.gnupg}}
}

// gpgDecrypt decrypts stdin to stdout.
func (h *harness) gpgDecrypt(mode string) proc {
	pass := h.key("recipient.pass")
	if mode == "sym" {
		pass = h.key("symmetric.pass")
	}
	return proc{argv: append(h.gpgBase(), "--passphrase-file", pass, "--decrypt"),
		env: []string{"GNUPGHOME=" + h.gnupg}}
}

// job writes a job file and returns the pipespool proc that runs it.
func (h *harness) job(name, body string) (proc, error) {
	path := filepath.Join(h.dir, "jobs", name+".toml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return proc{}, err
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		return proc{}, err
	}
	return proc{argv: []string{h.pp, "exec", path}}, nil
}

// jobBody is a job file: name, input, output none, then the stages (each
// a TOML fragment following "[[stage]]").
func jobBody(name, input string, stages ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name = %s\n\n[input]\npath = %s\n\n[output]\npath = \"none\"\n", strconv.Quote(name), strconv.Quote(input))
	for _, s := range stages {
		b.WriteString("\n[[stage]]\n" + s + "\n")
	}
	return b.String()
}

// tomlArgv is a command = [...] line.
func tomlArgv(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = strconv.Quote(a)
	}
	return "command = [" + strings.Join(q, ", ") + "]"
}

// shQuote quotes s for /bin/sh.
func shQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func shJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shQuote(a)
	}
	return strings.Join(q, " ")
}

func sizeName(b int64) string {
	return strings.ReplaceAll(fmtSize(b), " ", "")
}

// selected reports whether the -cases pattern keeps the group id.
func (h *harness) selected(id string) bool {
	return h.cfg.cases == nil || h.cfg.cases.MatchString(id)
}

// skip records why a group did not run.
func (h *harness) skip(id, why string) {
	h.skipped = append(h.skipped, id+": "+why)
	h.log("skipping %s: %s", id, why)
}

// missing names the peers in names that were not found.
func (h *harness) missing(names ...string) string {
	var m []string
	for _, n := range names {
		if h.tools[n] == "" {
			m = append(m, n)
		}
	}
	slices.Sort(m)
	return strings.Join(m, ", ")
}
