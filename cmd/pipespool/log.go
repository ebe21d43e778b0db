package main

import (
	"io"
	"log/slog"
)

// newTextHandler is slog's text handler without the time attribute: logs go
// to stderr, which cron mails and journald stamps already.
func newTextHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	o := *opts
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	return slog.NewTextHandler(w, &o)
}
