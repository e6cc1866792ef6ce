package template

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/kindling-vm/kindling/sandbox"
)

// LabelImage is the sandbox label that records the ID of the image a
// sandbox's root filesystem was copied from ('kindling run IMAGE'); with
// the templates built from an image (Template.Image), such sandboxes are
// the image's users, which image removal refuses to pull from under them.
const LabelImage = "kindling.image"

// ImageUser is a sandbox or a template made from an image.
type ImageUser struct {
	Kind string `json:"kind"` // "sandbox" or "template"
	Name string `json:"name"`
}

func (u ImageUser) String() string { return u.Kind + " " + u.Name }

// ImageUsers maps image IDs to their users: the sandboxes of rt labelled
// with an image's ID and the templates of s built from one (s may be
// nil), templates first, each kind by name. What it could not list is
// returned as an error beside what it could.
func ImageUsers(ctx context.Context, rt *sandbox.Runtime, s *Store) (map[string][]ImageUser, error) {
	out := map[string][]ImageUser{}
	var errs []error
	list, err := rt.List(ctx, sandbox.ListOptions{})
	errs = append(errs, err)
	for _, in := range list {
		if id := in.Spec.Labels[LabelImage]; id != "" {
			out[id] = append(out[id], ImageUser{Kind: "sandbox", Name: in.ID})
		}
	}
	if s != nil {
		ts, err := s.List(ctx)
		errs = append(errs, err)
		for _, t := range ts {
			if t.Image != "" {
				out[t.Image] = append(out[t.Image], ImageUser{Kind: "template", Name: t.Name})
			}
		}
	}
	for _, us := range out {
		slices.SortFunc(us, func(a, b ImageUser) int {
			return cmp.Or(strings.Compare(b.Kind, a.Kind), strings.Compare(a.Name, b.Name))
		})
	}
	return out, errors.Join(errs...)
}

// ImageUserNames returns an image's users as image.RemoveOptions.InUse
// wants them ("template NAME", "sandbox ID"); a failure to list counts
// as a user, so that a removal is never allowed blind.
func ImageUserNames(ctx context.Context, rt *sandbox.Runtime, s *Store) func(id string) []string {
	return func(id string) []string {
		users, err := ImageUsers(ctx, rt, s)
		var names []string
		for _, u := range users[id] {
			names = append(names, u.String())
		}
		if err != nil {
			names = append(names, "(unknown: "+err.Error()+")")
		}
		return names
	}
}
