package queue

import (
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
	for i, p := range h.Params {
		env = append(env, "FSPL_PARAM_"+strconv.Itoa(i+1)+"="+string(p))
	}
	for _, e := range h.Env {
		env = append(env, "FSPL_SET_"+string(e.Name)+"="+string(e.Value))
	}
	return env
}
