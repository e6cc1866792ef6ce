package main

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/kindling-vm/kindling/internal/preflight"
	"github.com/kindling-vm/kindling/sandbox"
	"github.com/kindling-vm/kindling/template"
)

// snakeCase is what every JSON key the CLI prints looks like.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// TestJSONKeysSnakeCase checks that every struct the commands print with
// --json names each of its exported fields with an explicit snake_case
// JSON key (or hides it with "-"), down to the structs it holds, so that no
// Go field name ever leaks into the documented shapes (docs/cli.md).
func TestJSONKeysSnakeCase(t *testing.T) {
	printed := []any{
		sandbox.Info{},           // ps, inspect, run/create/start/restore --json
		template.Template{},      // template ls, inspect, create --json
		imageView{},              // image ls --json, image inspect
		vcpuThread{},             // threads --json
		versionInfo{},            // version --json
		checkReport{},            // check --json
		preflight.Result{},       // check --json's entries
		sandbox.SnapshotInfo{},   // the snapshot's own description
		struct{ sandbox.Exit }{}, // wait status
	}
	seen := map[reflect.Type]bool{}
	for _, v := range printed {
		checkJSONKeys(t, reflect.TypeOf(v), reflect.TypeOf(v).String(), seen)
	}
}

func checkJSONKeys(t *testing.T, typ reflect.Type, path string, seen map[reflect.Type]bool) {
	for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array || typ.Kind() == reflect.Map {
		typ = typ.Elem()
	}
	if typ.Kind() != reflect.Struct || seen[typ] || typ.PkgPath() == "time" {
		return
	}
	seen[typ] = true
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		tag, ok := f.Tag.Lookup("json")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case f.Anonymous && name == "":
			checkJSONKeys(t, f.Type, path, seen) // fields promoted
			continue
		case name == "-":
			continue
		case !ok || name == "":
			t.Errorf("%s.%s has no json key: it would print as %q", path, f.Name, f.Name)
		case !snakeCase.MatchString(name):
			t.Errorf("%s.%s prints as %q: not snake_case", path, f.Name, name)
		}
		checkJSONKeys(t, f.Type, path+"."+name, seen)
	}
}
