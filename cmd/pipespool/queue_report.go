package main

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/pipespool/pipespool/pipeline"
	"github.com/pipespool/pipespool/queue"
)

// queueRecorder collects what queue-process did, for --report and
// --metrics-file (docs/report.md).
type queueRecorder struct {
	opts *queueProcessOptions
	// labels follow job= on every metric: queue="DIR" when queue-process
	// runs several queues, none for one.
	labels []pipeline.Label
	runner queue.Runner
	q      *queue.Queue
	rep    queue.ProcessReport
	stages []pipeline.StageReport // per stage name, summed over the jobs
}

func newQueueRecorder(opts *queueProcessOptions, po queue.ProcessOptions, jobFile string, q *queue.Queue) *queueRecorder {
	r := &queueRecorder{opts: opts, runner: po.Runner, q: q}
	r.rep = queue.ProcessReport{Kind: "queue-process", Queue: q.Dir, Decoder: po.Decoder.String(),
		OrderBy: opts.OrderBy, OnError: opts.OnError, Start: time.Now(), Jobs: []queue.JobOutcome{}}
	if p, ok := po.Runner.(*pipelineRunner); ok {
		r.rep.JobFile, r.rep.Job = jobFile, p.job.Name
	} else {
		r.rep.Command = opts.Command
		r.rep.Job = queueName(q.Dir)
	}
	if n, err := q.NextSeqFile().Read(); err == nil && po.OrderBy == queue.OrderSequence {
		r.rep.NextSeqBefore = &n
	}
	return r
}

// queueName is the metrics' job label in command mode: the queue
// directory's name.
func queueName(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return filepath.Base(dir)
}

func (r *queueRecorder) onJob(o queue.JobOutcome) {
	if lr, ok := r.runner.(lastReporter); ok {
		if pr := lr.takeReport(); pr != nil {
			o.Pipeline = pr
			r.addStages(pr.Stages)
		}
	}
	r.rep.Add(o)
}

// addStages sums a job's stage counters into the run's, by stage name.
func (r *queueRecorder) addStages(stages []pipeline.StageReport) {
	for _, s := range stages {
		i := 0
		for i < len(r.stages) && r.stages[i].Name != s.Name {
			i++
		}
		if i == len(r.stages) {
			r.stages = append(r.stages, pipeline.StageReport{Name: s.Name, Kind: s.Kind, Argv: s.Argv, Status: "ok"})
		}
		t := &r.stages[i]
		t.BytesIn += max(s.BytesIn, 0)
		t.BytesOut += max(s.BytesOut, 0)
		t.Duration += s.Duration
		t.Stalls += s.Stalls
		t.Nudges += s.Nudges
	}
}

// finish completes the report with the run's result err and writes the
// report and metrics files. A held queue lock writes nothing: that run did
// not happen, and the previous run's metrics stay.
func (r *queueRecorder) finish(err error) {
	var lh *queue.LockHeldError
	if errors.As(err, &lh) {
		return
	}
	r.complete(err)
	log := r.opts.g.Logger()
	if r.opts.Report != "" {
		if werr := writeJSONAtomic(r.opts.Report, &r.rep); werr != nil {
			log.Error("cannot write the report", "path", r.opts.Report, "err", werr)
		}
	}
	if r.opts.MetricsFile != "" {
		if werr := r.writeMetrics(); werr != nil {
			log.Error("cannot write the metrics file", "path", r.opts.MetricsFile, "err", werr)
		}
	}
}

// complete completes the report with the run's result err.
func (r *queueRecorder) complete(err error) {
	rep := &r.rep
	rep.Finish(err, time.Now())
	if n, rerr := r.q.NextSeqFile().Read(); rerr == nil && rep.NextSeqBefore != nil {
		rep.NextSeqAfter = &n
	}
}

// writeMetrics writes the run metrics of exec for the whole run (stage bytes
// summed over its jobs in pipeline mode, none in command mode) and the
// queue's own.
func (r *queueRecorder) writeMetrics() error {
	return pipeline.WriteMetricsSeries(r.opts.MetricsFile, []pipeline.MetricSeries{r.series()})
}

// series is the run's metrics series.
func (r *queueRecorder) series() pipeline.MetricSeries {
	rep := &r.rep
	pr := &pipeline.Report{Job: rep.Job, Start: rep.Start, End: rep.End, Duration: rep.Duration,
		Result: pipeline.ResultFailed, Stages: r.stages}
	if rep.Result == queue.ResultSuccess {
		pr.Result = pipeline.ResultSuccess
	}
	extra := []pipeline.Metric{
		{Name: "pipespool_queue_jobs_processed_total", Help: "Jobs the last queue-process run ran (succeeded or failed).", Type: "counter", Value: float64(rep.JobsProcessed)},
		{Name: "pipespool_queue_jobs_failed_total", Help: "Jobs that failed in the last queue-process run, whatever --on-error did with them.", Type: "counter", Value: float64(rep.JobsFailed)},
	}
	if rep.NextSeqAfter != nil {
		extra = append(extra, pipeline.Metric{Name: "pipespool_queue_nextseq", Help: "The queue's nextseq after the last queue-process run.", Value: float64(*rep.NextSeqAfter)})
	}
	return pipeline.MetricSeries{Report: pr, Labels: r.labels, Extra: extra}
}
