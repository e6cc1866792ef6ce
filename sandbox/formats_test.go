package sandbox

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/kindling-vm/kindling/internal/store"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/formats")

// Golden files of the formats this package stores. Each is named with its
// format version: a change to what is written fails TestFormatsGolden
// until the version is bumped and -update writes the new file. The files
// of older versions stay, and TestFormatsReadEveryVersion checks that they
// are still read. The version 1 files were written by kindling before the
// VMM configuration had JSON tags (its keys are the Go field names).

// goldenPath is the golden file of format name at version v.
func goldenPath(name string, v int) string {
	return filepath.Join("testdata", "formats", fmt.Sprintf("%s-v%d.json", name, v))
}

// checkGolden compares got with the golden file of name at version v.
func checkGolden(t *testing.T, name string, v int, got []byte) {
	t.Helper()
	path := goldenPath(name, v)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: a new format version needs its golden file: run go test . -run TestFormatsGolden -update", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the %s format changed but its version (%d) did not: bump the version, read the old one, and run go test . -run TestFormatsGolden -update\ngot:\n%s\nwant:\n%s", name, v, got, want)
	}
}

func TestFormatsGolden(t *testing.T) {
	t.Run("state", func(t *testing.T) {
		st, err := store.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		rec := formatsRecord(store.Version)
		if err := st.Create(t.Context(), rec.ID, rec); err != nil {
			t.Fatal(err)
		}
		dir, _ := st.Dir(rec.ID)
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, "state", store.Version, b)
	})
	t.Run("snapshot-manifest", func(t *testing.T) {
		man := formatsManifest(manifestVersion)
		b, err := encodeManifest(&man)
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, "snapshot-manifest", manifestVersion, b)
	})
}

// Every version's golden file is read back into the value it was written
// from.
func TestFormatsReadEveryVersion(t *testing.T) {
	for v := 1; v <= store.Version; v++ {
		t.Run(fmt.Sprintf("state-v%d", v), func(t *testing.T) {
			root := t.TempDir()
			st, err := store.Open(root)
			if err != nil {
				t.Fatal(err)
			}
			want := formatsRecord(v)
			if err := st.Create(t.Context(), want.ID, record{ID: want.ID}); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(goldenPath("state", v))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, want.ID, "state.json"), b, 0o600); err != nil {
				t.Fatal(err)
			}
			var got record
			if err := st.Load(want.ID, &got); err != nil {
				t.Fatal(err)
			}
			compactConfLists(t, &got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("read\n%+v\nwant\n%+v", got, want)
			}
			if !reflect.DeepEqual(got.Machine.Config, formatsConfig()) {
				t.Errorf("vmm config read as\n%+v\nwant\n%+v", got.Machine.Config, formatsConfig())
			}
		})
	}
	for v := oldestManifestVersion; v <= manifestVersion; v++ {
		t.Run(fmt.Sprintf("snapshot-manifest-v%d", v), func(t *testing.T) {
			dir := t.TempDir()
			b, err := os.ReadFile(goldenPath("snapshot-manifest", v))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, manifestName), b, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := decodeManifest(filepath.Join(dir, manifestName), b)
			if err != nil {
				t.Fatal(err)
			}
			if want := formatsManifest(v); !reflect.DeepEqual(*got, want) {
				t.Errorf("read\n%+v\nwant\n%+v", *got, want)
			}
		})
	}
}
