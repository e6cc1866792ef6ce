package template

import (
	"os"
	"sync"
)

// progress counts the bytes hashed by several goroutines and reports them
// to a ProgressFunc, at most once per progressStep bytes and at the end.
// A nil *progress counts nothing.
type progress struct {
	report ProgressFunc

	mu       sync.Mutex // guards the fields below and calls to report
	total    int64
	done     int64
	reported int64
}

// progressStep is how many bytes are hashed between two reports.
const progressStep = 4 << 20

func newProgress(report ProgressFunc) *progress {
	if report == nil {
		return nil
	}
	return &progress{report: report}
}

// expect adds the size of the file at path to the total; it is called
// before the hashing starts.
func (p *progress) expect(path string) {
	if p == nil {
		return
	}
	if fi, err := os.Stat(path); err == nil {
		p.mu.Lock()
		p.total += fi.Size()
		p.mu.Unlock()
	}
}

// Write counts len(b) bytes hashed.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(len(b))
	if p.done-p.reported >= progressStep || p.done >= p.total {
		p.reported = p.done
		p.report(p.done, p.total)
	}
	return len(b), nil
}
