// Package queue reads and writes Filespooler (fspl 1.2) packets and queue
// directories, byte-compatible with fspl, and processes a queue in order.
//
// A packet is a 30-byte prefix (magic, version, header length, two CRCs), a
// MessagePack header and an unframed payload; see packet.go and
// docs/queue.md. A queue directory holds nextseq (the next sequence number to
// process), nextseq.lock (flocked while the queue is processed, by fspl and
// pipespool alike) and jobs/ with the packets, named fspl-*.fspl.
//
// Unlike fspl, every rename and unlink here is followed by an fsync of the
// directory, so a crash at any instant loses no packet and never moves
// nextseq past a job whose processing did not finish. Delivery is
// at-least-once: a crash after a job's command finished and before nextseq
// was replaced runs that job again.
package queue
