package netdev

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

func TestCreateNetNS(t *testing.T) {
	needRoot(t)
	name := testPrefix + "-" + randomHex(t, 4)
	path, err := CreateNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DeleteNetNS(name) })
	if want := filepath.Join(NetNSDir, name); path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if _, err := ResolveNetNS(name); err != nil {
		t.Fatalf("ResolveNetNS(%q): %v", name, err)
	}
	if fileInode(t, path) == nsInode(t) {
		t.Error("the new namespace is the caller's own")
	}
	before := nsInode(t)
	if _, err := CreateNetNS(name); !errors.Is(err, ErrExists) {
		t.Errorf("second CreateNetNS = %v, want ErrExists", err)
	}
	names, err := ListNetNS(testPrefix)
	if err != nil || !slices.Contains(names, name) {
		t.Errorf("ListNetNS = %v, %v; want it to hold %s", names, err, name)
	}
	if err := DeleteNetNS(name); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveNetNS(name); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete ResolveNetNS = %v, want ErrNotFound", err)
	}
	if err := DeleteNetNS(name); err != nil {
		t.Errorf("second DeleteNetNS = %v, want nil", err)
	}
	if after := nsInode(t); after != before {
		t.Errorf("the calling thread moved from netns %d to %d", before, after)
	}
}

func TestValidateNetNSName(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b", string(make([]byte, 256))} {
		if err := ValidateNetNSName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateNetNSName(%q) = %v, want ErrInvalid", bad, err)
		}
		if _, err := CreateNetNS(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateNetNS(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if err := ValidateNetNSName("kindling-sb-1"); err != nil {
		t.Error(err)
	}
}
