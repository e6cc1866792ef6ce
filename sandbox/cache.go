package sandbox

import (
	"sync"

	"github.com/kindling-vm/kindling/internal/store"
)

// recordCache keeps the records List and Inspect read, each with its state
// file's stamp (store.Stamp) and the part of its Info that does not depend
// on the host, so that they re-read and decode only the files that
// changed: a stat tells (the store replaces a state file whole on every
// save). Entries are immutable once made; callers get deep copies of
// what they hand out. Safe for concurrent use.
type recordCache struct {
	mu sync.Mutex // guards m
	m  map[string]*cachedRecord
}

// cachedRecord is one version of a sandbox's state file.
type cachedRecord struct {
	stamp store.Stamp
	rec   record
	// base is the record's Info before the host is asked (status, PIDs):
	// see baseInfo.
	base Info
}

func (c *recordCache) get(id string) *cachedRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[id]
}

func (c *recordCache) put(id string, e *cachedRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*cachedRecord{}
	}
	c.m[id] = e
}

func (c *recordCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// keepOnly forgets every sandbox not in ids (a List saw them gone).
func (c *recordCache) keepOnly(ids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.m {
		if !ids[id] {
			delete(c.m, id)
		}
	}
}

// loadCached returns sandbox id's record as its state file holds it now,
// from the cache when the file's stamp is the one cached. stamp is the
// file's current stamp when the caller has it (List's entries), else zero:
// a stat is made. Errors are the store's Load's. The record returned is
// shared: it must not be changed.
func (r *Runtime) loadCached(id string, stamp store.Stamp) (*cachedRecord, error) {
	if stamp.IsZero() {
		stamp, _ = r.st.Stamp(id) // on an error, the load below says what
	}
	if e := r.records.get(id); e != nil && !stamp.IsZero() && e.stamp == stamp {
		return e, nil
	}
	e := &cachedRecord{}
	st, err := r.st.LoadStamped(id, &e.rec)
	if err != nil {
		r.records.forget(id)
		return nil, err
	}
	e.rec.dirID = id
	e.stamp = st
	e.base = r.baseInfo(&e.rec)
	if st.IsZero() {
		r.records.forget(id) // too fresh to be told from the next version
	} else {
		r.records.put(id, e)
	}
	return e, nil
}
