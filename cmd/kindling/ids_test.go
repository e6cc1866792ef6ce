package main

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kindling-vm/kindling/sandbox"
)

// fakeLister is a runtime with a fixed set of sandbox IDs.
type fakeLister []string

func (f fakeLister) Inspect(_ context.Context, id string) (sandbox.Info, error) {
	for _, x := range f {
		if x == id {
			return sandbox.Info{ID: id}, nil
		}
	}
	return sandbox.Info{}, fmt.Errorf("sandbox %q: %w", id, sandbox.ErrNotFound)
}

func (f fakeLister) List(context.Context, sandbox.ListOptions) ([]sandbox.Info, error) {
	infos := make([]sandbox.Info, len(f))
	for i, id := range f {
		infos[i] = sandbox.Info{ID: id}
	}
	return infos, nil
}

func TestResolveID(t *testing.T) {
	rt := fakeLister{"web", "web-2", "db", "3f9a01c2b4d5"}
	tests := []struct {
		arg, want string
		wantErr   string
	}{
		{arg: "web", want: "web"}, // an ID wins over being a prefix
		{arg: "web-", want: "web-2"},
		{arg: "d", want: "db"},
		{arg: "3f9", want: "3f9a01c2b4d5"},
		{arg: "zz", want: "zz"}, // not found: the runtime says so
		{arg: "", want: ""},
		{arg: "w", wantErr: `sandbox ID prefix "w" is ambiguous: it matches web, web-2: give more of the ID`},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			got, err := resolveID(context.Background(), rt, tt.arg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("resolveID(%q) = %q, %v; want error %q", tt.arg, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("resolveID(%q) = %q, %v; want %q", tt.arg, got, err, tt.want)
			}
		})
	}
	var failing failingLister
	if _, err := resolveID(context.Background(), failing, "x"); !errors.Is(err, errListFailed) {
		t.Errorf("a failing list: %v, want its error", err)
	}
}

var errListFailed = errors.New("list failed")

// failingLister finds nothing and cannot list.
type failingLister struct{}

func (failingLister) Inspect(context.Context, string) (sandbox.Info, error) {
	return sandbox.Info{}, sandbox.ErrNotFound
}

func (failingLister) List(context.Context, sandbox.ListOptions) ([]sandbox.Info, error) {
	return nil, errListFailed
}
