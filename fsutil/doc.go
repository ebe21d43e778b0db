// Package fsutil holds the file-system rules every part of pipespool shares:
// how a file is opened (close-on-exec, without Go's netpoller), written
// atomically and durably, locked, created without following a link somebody
// else planted, and which existing paths may be written through at all.
//
// The rules, in one place so that the pipeline's output, its sidecar files
// (a sha256 digest, the report, the metrics) and the queue's own files all
// keep them:
//
//   - A file pipespool creates is created with O_EXCL and O_NOFOLLOW: it is
//     never something that existed before, and never the target of a link.
//     A fixed name (a queue's nextseq.temp, a job's .out file) first has
//     whatever is there unlinked (a link is removed, not followed).
//   - A file that is replaced is replaced atomically: written under a
//     temporary name beside it, fsynced, renamed over it, and its directory
//     fsynced. A reader sees the old content or the new, and a crash leaves
//     one of them.
//   - A symbolic link at the final path is written through, as the shell's
//     `>` does, but atomically: its target is replaced, and the link stays.
//     A link is not followed where the kernel's protected_symlinks would
//     refuse it: in a sticky world-writable directory (/tmp), a link owned
//     by neither pipespool's user nor the directory's owner.
//   - An existing path that is not a regular file (a FIFO, /dev/null, a
//     tape, a terminal) is written in place, since renaming over it would
//     replace the node; in a sticky world-writable directory only when it is
//     owned by pipespool's user or the directory's owner (what the kernel's
//     protected_fifos=2 demands), so another user's FIFO in /tmp never
//     receives a decrypted stream.
//   - An existing file keeps its mode, and its owner and group where
//     pipespool is allowed to set them, unless the caller asks for a mode.
//   - A temporary file holds an flock(2) for as long as it may still be
//     written; the next creation of a temporary for the same final name
//     removes those whose lock is free (their writer was killed).
package fsutil
