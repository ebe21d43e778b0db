// Command teerelay is the benchmark harness's fan-out at the pump level:
// it copies its stdin to its stdout and to the stdin of each of -extra
// consumers it starts (`cat`, output to /dev/null), with a pump.Tee, as
// pipespool's fan-out hop does between a stage and its branches. With
// -pump it is the single-branch relay instead: stdin to stdout with a
// pump.Pump, the reference the fan-out is measured against.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"

	"github.com/pipespool/pipespool/pump"
)

func main() {
	single := flag.Bool("pump", false, "relay stdin to stdout with one pump, no fan-out")
	extra := flag.Int("extra", 1, "consumers to start beside stdout")
	pipeSize := flag.Int("pipe", pump.DefaultPipeSize, "size of the pipes to the consumers it starts")
	flag.Parse()
	if err := run(*single, *extra, *pipeSize); err != nil {
		fmt.Fprintln(os.Stderr, "teerelay:", err)
		os.Exit(1)
	}
}

func run(single bool, extra, pipeSize int) error {
	// stdin and stdout are inherited: not owned, never closed, their
	// flags untouched, as pipespool's own.
	src := pump.End{FD: 0, Name: "stdin"}
	out := pump.End{FD: 1, Name: "stdout"}
	if single {
		p, err := pump.New(src, out)
		if err != nil {
			return err
		}
		if res := p.Run(); res.Err != nil {
			return res.Err
		}
		return nil
	}
	dsts := []pump.End{out}
	var cmds []*exec.Cmd
	for i := range extra {
		pp, _, err := pump.NewPipe(pipeSize)
		if err != nil {
			return err
		}
		if err := pump.SetNonblock(pp.W); err != nil {
			return err
		}
		cmd := exec.Command("cat")
		stdin := pump.File(pp.R, "consumer stdin")
		cmd.Stdin, cmd.Stderr = stdin, os.Stderr
		err = cmd.Start()
		stdin.Close()
		if err != nil {
			return err
		}
		cmds = append(cmds, cmd)
		dsts = append(dsts, pump.End{FD: pp.W, Own: true, Name: fmt.Sprintf("consumer %d", i+1)})
	}
	t, err := pump.NewTee(src, dsts)
	if err != nil {
		return err
	}
	res := t.Run()
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			return fmt.Errorf("consumer: %w", err)
		}
	}
	for i, r := range res {
		if !r.EOF {
			return fmt.Errorf("destination %d: %+v", i, r)
		}
	}
	return nil
}
