package sandbox

import (
	"reflect"
	"sync"
)

// deepCopy returns a copy of v that shares no memory a caller could change
// with v: pointers, slices and maps reachable through exported fields are
// copied, recursively. Unexported fields are copied as values, which
// shares what they point to; the types used in Info keep only immutable
// data there (time.Time's location, netip.Addr's zone). The record cache
// (cache.go) hands out copies of what it keeps, so that a caller changing
// an Info it got cannot change what the next caller gets.
func deepCopy[T any](v T) T {
	out := reflect.New(reflect.TypeFor[T]()).Elem()
	copyValue(out, reflect.ValueOf(&v).Elem())
	return out.Interface().(T)
}

// copyValue sets dst, a settable value of src's type, to a deep copy of
// src.
func copyValue(dst, src reflect.Value) {
	t := src.Type()
	if !hasRefs(t) {
		dst.Set(src)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if src.IsNil() {
			return
		}
		p := reflect.New(t.Elem())
		copyValue(p.Elem(), src.Elem())
		dst.Set(p)
	case reflect.Slice:
		if src.IsNil() {
			return
		}
		s := reflect.MakeSlice(t, src.Len(), src.Len())
		for i := range src.Len() {
			copyValue(s.Index(i), src.Index(i))
		}
		dst.Set(s)
	case reflect.Map:
		if src.IsNil() {
			return
		}
		m := reflect.MakeMapWithSize(t, src.Len())
		it := src.MapRange()
		for it.Next() {
			k := reflect.New(t.Key()).Elem()
			copyValue(k, it.Key())
			e := reflect.New(t.Elem()).Elem()
			copyValue(e, it.Value())
			m.SetMapIndex(k, e)
		}
		dst.Set(m)
	case reflect.Array:
		for i := range src.Len() {
			copyValue(dst.Index(i), src.Index(i))
		}
	case reflect.Struct:
		dst.Set(src) // the unexported fields, and the plain ones
		for _, i := range refFields(t) {
			f := dst.Field(i)
			f.SetZero()
			copyValue(f, src.Field(i))
		}
	default: // interfaces, channels, functions: shared
		dst.Set(src)
	}
}

// plans caches, by type, whether a type holds references (hasRefs) and a
// struct's exported fields that do (refFields).
var plans sync.Map // reflect.Type -> *plan

type plan struct {
	refs   bool
	fields []int
}

func planOf(t reflect.Type) *plan {
	if p, ok := plans.Load(t); ok {
		return p.(*plan)
	}
	// No recursion without end: a type can only hold itself through a
	// pointer, slice or map, whose plan needs no look inside.
	p := &plan{}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		p.refs = true
	case reflect.Array:
		p.refs = hasRefs(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if f.IsExported() && hasRefs(f.Type) {
				p.fields = append(p.fields, i)
			}
		}
		p.refs = len(p.fields) > 0
	}
	plans.Store(t, p)
	return p
}

func hasRefs(t reflect.Type) bool    { return planOf(t).refs }
func refFields(t reflect.Type) []int { return planOf(t).fields }
