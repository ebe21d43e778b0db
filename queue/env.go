package queue

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"time"
)

// Rfc3339UTC and rfc3339Local are the forms fspl (chrono, whole seconds)
// prints: "2022-05-08T00:38:31Z" and "2022-05-07T19:38:31-05:00".
const (
	rfc3339UTC   = "2006-01-02T15:04:05Z"
	rfc3339Local = "2006-01-02T15:04:05-07:00"
)

// FormatLocalTime formats t as fspl's queue-ls and FSPL_CTIME_RFC3339_LOCAL do.
func FormatLocalTime(t time.Time) string { return t.Local().Format(rfc3339Local) }

// JobEnv returns the FSPL_* environment of a job, in fspl's order:
// FSPL_SEQ, FSPL_CTIME_*, then (for a queue job, when jobName != "")
// FSPL_JOB_FILENAME, FSPL_JOB_QUEUEDIR, FSPL_JOB_FULLPATH, then FSPL_PARAM_n
// and FSPL_SET_<NAME>. Values are raw bytes, as the packet holds them.
func JobEnv(h *Header, q *Queue, jobName string) []string {
	return appendPacketEnv(jobEnvFixed(h, q, jobName), h)
}

// WriteJobEnv writes JobEnv one NAME=value per line to w, without holding
// the params and environment of the header in memory (a header read by
// ReadHeaderLazy is streamed from its body).
func WriteJobEnv(w io.Writer, h *Header, q *Queue, jobName string) error {
	bw := bufio.NewWriter(w)
	for _, kv := range jobEnvFixed(h, q, jobName) {
		bw.WriteString(kv)
		bw.WriteByte('\n')
	}
	err := h.Each(func(i int, p []byte) error {
		bw.WriteString("FSPL_PARAM_" + strconv.Itoa(i+1) + "=")
		bw.Write(p)
		return bw.WriteByte('\n')
	}, func(_ int, name, value []byte) error {
		bw.WriteString("FSPL_SET_")
		bw.Write(name)
		bw.WriteByte('=')
		bw.Write(value)
		return bw.WriteByte('\n')
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return err
}

// jobEnvFixed is JobEnv without the packet's params and env.
func jobEnvFixed(h *Header, q *Queue, jobName string) []string {
	t := h.CTime()
	env := []string{
		"FSPL_SEQ=" + strconv.FormatUint(h.Seq, 10),
		"FSPL_CTIME_SECS=" + strconv.FormatUint(h.CTimeSecs, 10),
		"FSPL_CTIME_NANOS=" + strconv.FormatUint(h.CTimeNanos, 10),
		"FSPL_CTIME_RFC3339_UTC=" + t.UTC().Format(rfc3339UTC),
		"FSPL_CTIME_RFC3339_LOCAL=" + FormatLocalTime(t),
	}
	if q != nil && jobName != "" {
		env = append(env,
			"FSPL_JOB_FILENAME="+jobName,
			"FSPL_JOB_QUEUEDIR="+q.Dir,
			"FSPL_JOB_FULLPATH="+q.JobPath(jobName))
	}
	return env
}

// appendPacketEnv appends FSPL_PARAM_n and FSPL_SET_<NAME> of h to env.
func appendPacketEnv(env []string, h *Header) []string {
	env = slices.Grow(env, max(h.Size.Params, len(h.Params))+max(h.Size.Env, len(h.Env)))
	h.Each(func(i int, p []byte) error {
		env = append(env, "FSPL_PARAM_"+strconv.Itoa(i+1)+"="+string(p))
		return nil
	}, func(_ int, name, value []byte) error {
		env = append(env, "FSPL_SET_"+string(name)+"="+string(value))
		return nil
	})
	return env
}
