// Command pauser is the benchmark harness's uneven party of a stream.
//
// As a consumer (the default) it reads its stdin as fast as it can for a
// while, then reads nothing for as long, and again, until end of file,
// discarding what it read: a tape drive that repositions, an ssh window
// that closes, a zfs receive that commits.
//
//	pauser [-read 100ms] [-pause 100ms]
//
// As a producer (-produce N) it writes N bytes to its stdout at a rate it
// cannot exceed (-rate, bytes per second), a MiB at a time: a disk, or a
// zfs send. Time it spends blocked on a full pipe is lost, as it is for a
// disk that stopped reading: it does not catch up afterwards (pv -L does).
//
//	pauser -produce 1073741824 -rate 268435456
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	read := flag.Duration("read", 100*time.Millisecond, "how long each reading spell lasts")
	pause := flag.Duration("pause", 100*time.Millisecond, "how long each pause lasts")
	produce := flag.Int64("produce", 0, "write this many bytes instead of reading")
	rate := flag.Int64("rate", 256<<20, "with -produce: at most this many bytes per second")
	flag.Parse()
	buf := make([]byte, 1<<20) // a pipe's worth per read or write
	if *produce > 0 {
		producer(buf, *produce, *rate)
		return
	}
	var total int64
	for {
		end := time.Now().Add(*read)
		for time.Now().Before(end) {
			n, err := os.Stdin.Read(buf)
			total += int64(n)
			if err == io.EOF {
				return
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "pauser: after %d bytes: %v\n", total, err)
				os.Exit(1)
			}
		}
		time.Sleep(*pause) // the pause is the behaviour being measured
	}
}

// producer writes size bytes of buf's pattern, each write of len(buf)
// taking at least len(buf)/rate seconds from its start.
func producer(buf []byte, size, rate int64) {
	for i := range buf {
		buf[i] = byte(i*7 + i>>8)
	}
	per := time.Duration(float64(len(buf)) / float64(rate) * float64(time.Second))
	for left := size; left > 0; {
		start := time.Now()
		b := buf[:min(int64(len(buf)), left)]
		if _, err := os.Stdout.Write(b); err != nil {
			fmt.Fprintf(os.Stderr, "pauser: after %d bytes: %v\n", size-left, err)
			os.Exit(1)
		}
		left -= int64(len(b))
		time.Sleep(time.Until(start.Add(per))) // the producer's speed
	}
}
