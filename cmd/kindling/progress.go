package main

import (
	"time"

	"github.com/kindling-vm/kindling/internal/install"
	"github.com/kindling-vm/kindling/template"
)

// hashProgress returns the template store options that show the progress
// of hashing a template's files on stderr (the bytes, of how many, and the
// rate, on one line redrawn in place, as a download's), and the function
// that erases that line at the end. When stderr is not a terminal it gives
// no option: a script's or a log's stderr gets nothing.
func (a *app) hashProgress(what string) ([]template.Option, func()) {
	report, end := a.progressReport(what)
	if report == nil {
		return nil, end
	}
	return []template.Option{template.WithProgress(report)}, end
}

// progressReport returns what hashProgress reports to (nil when stderr is
// not a terminal) and its end.
func (a *app) progressReport(what string) (template.ProgressFunc, func()) {
	if !isTerminal(a.stderr) {
		return nil, func() {}
	}
	b := &progressBar{w: a.stderr, start: time.Now()}
	return func(done, total int64) {
		b.update(install.Progress{File: what, Done: done, Total: total})
	}, b.clear
}
