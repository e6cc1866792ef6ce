package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// EventKind says what an Event reports.
type EventKind string

// The events of an import or pull, in order: Resolved once; then either
// Cached (nothing to do) or Layer events, Build and Done.
const (
	// EventResolved: the image is known (ID, layer count).
	EventResolved EventKind = "resolved"
	// EventCached: the store has the root filesystem already.
	EventCached EventKind = "cached"
	// EventLayer: bytes of a layer were read (at most ten a second per
	// layer, and once when it is done).
	EventLayer EventKind = "layer"
	// EventBuild: the layers are in place; mkfs.ext4 runs.
	EventBuild EventKind = "build"
	// EventDone: the image is in the store.
	EventDone EventKind = "done"
)

// Event is one step of an import or pull, for a progress display or a
// stream of JSON events.
type Event struct {
	Kind EventKind `json:"event"`
	// ID is the image ID (from EventResolved on).
	ID string `json:"id,omitempty"`
	// Layer is the layer the event is about, 1 for the bottom one, of
	// Layers in all.
	Layer  int    `json:"layer,omitempty"`
	Layers int    `json:"layers,omitempty"`
	Digest string `json:"digest,omitempty"` // the layer's
	// Bytes are the layer's (uncompressed) bytes read so far; Size its
	// size as stored (compressed), when known.
	Bytes int64 `json:"bytes,omitempty"`
	Size  int64 `json:"size,omitempty"`
	// LayerDone is set on a layer's last event.
	LayerDone bool `json:"layer_done,omitempty"`
	// Total are the bytes read from all layers so far, and Rate the
	// average rate since the first layer began, in bytes per second.
	Total int64   `json:"total,omitempty"`
	Rate  float64 `json:"rate,omitempty"`
}

// progress reports the reading of an image's layers to fn.
type progress struct {
	fn     func(Event)
	id     string
	layers int
	mu     sync.Mutex // guards start, total and calls of fn
	start  time.Time
	total  int64
}

func (p *progress) emit(e Event) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e.ID = p.id
	if e.Layers == 0 {
		e.Layers = p.layers
	}
	p.fn(e)
}

// image wraps img so that reading its layers checks each layer's content
// against its diff ID (the digest the image's configuration, and so its
// ID, vouches for) and reports progress.
func (p *progress) image(img v1.Image) v1.Image {
	return &progressImage{Image: img, p: p}
}

type progressImage struct {
	v1.Image
	p *progress
}

func (pi *progressImage) Layers() ([]v1.Layer, error) {
	ls, err := pi.Image.Layers()
	if err != nil {
		return nil, err
	}
	// The diff IDs come from the configuration itself: a layer's DiffID
	// method may hash the content it is meant to check.
	cf, err := pi.ConfigFile()
	if err != nil {
		return nil, err
	}
	if len(cf.RootFS.DiffIDs) != len(ls) {
		return nil, fmt.Errorf("the image has %d layers and its configuration %d diff IDs", len(ls), len(cf.RootFS.DiffIDs))
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &progressLayer{Layer: l, p: pi.p, index: i + 1, diffID: cf.RootFS.DiffIDs[i]}
	}
	return out, nil
}

type progressLayer struct {
	v1.Layer
	p      *progress
	index  int
	diffID v1.Hash // from the image's configuration
}

func (pl *progressLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := pl.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	r := &progressReader{rc: rc, l: pl, want: pl.diffID, h: sha256.New()}
	if d, err := pl.Digest(); err == nil {
		r.digest = d.String()
	}
	if n, err := pl.Size(); err == nil {
		r.size = n
	}
	pl.p.mu.Lock()
	if pl.p.start.IsZero() {
		pl.p.start = time.Now()
	}
	pl.p.mu.Unlock()
	return r, nil
}

type progressReader struct {
	rc     io.ReadCloser
	l      *progressLayer
	want   v1.Hash   // the diff ID
	h      hash.Hash // of the content read so far
	digest string
	size   int64
	n      int64
	last   time.Time
	done   bool
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.rc.Read(b)
	r.n += int64(n)
	r.h.Write(b[:n])
	if err == io.EOF && !r.done {
		if got := hex.EncodeToString(r.h.Sum(nil)); r.want.Algorithm != "sha256" || got != r.want.Hex {
			return n, &digestError{layer: r.l.index, got: "sha256:" + got, want: r.want.String()}
		}
	}
	p := r.l.p
	if p.fn == nil {
		return n, err
	}
	p.mu.Lock()
	p.total += int64(n)
	total, start := p.total, p.start
	p.mu.Unlock()
	now := time.Now()
	final := err == io.EOF && !r.done
	if final {
		r.done = true
	}
	if final || now.Sub(r.last) >= 100*time.Millisecond {
		r.last = now
		var rate float64
		if el := now.Sub(start).Seconds(); el > 0 {
			rate = float64(total) / el
		}
		p.emit(Event{Kind: EventLayer, Layer: r.l.index, Digest: r.digest, Bytes: r.n, Size: r.size,
			LayerDone: final, Total: total, Rate: rate})
	}
	return n, err
}

func (r *progressReader) Close() error { return r.rc.Close() }

// digestError is a layer whose content does not match its diff ID.
type digestError struct {
	layer     int
	got, want string
}

func (e *digestError) Error() string {
	return fmt.Sprintf("layer %d: content %s does not match its digest %s", e.layer, e.got, e.want)
}
