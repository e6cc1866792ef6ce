package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
)

// formatFlag is the --format flag that goes with every --json: a Go
// template applied to the JSON the command prints (to each element of a
// JSON array, one line each), so that its fields are the JSON's keys, as
// docs/cli.md documents them: --format '{{.id}} {{.status}}'. Giving it
// turns --json on.
type formatFlag struct {
	tmpl   string
	asJSON *bool
}

func (f *formatFlag) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("empty template: give one like '{{.id}}'")
	}
	f.tmpl = s
	*f.asJSON = true
	return nil
}

func (f *formatFlag) String() string { return f.tmpl }

func (f *formatFlag) Type() string { return "TEMPLATE" }

// addFormatFlag adds --format, which sets *asJSON, to cmd.
func addFormatFlag(cmd *cobra.Command, asJSON *bool) {
	cmd.Flags().Var(&formatFlag{asJSON: asJSON}, "format", "print each JSON object through the Go `TEMPLATE` (keys as in --json: '{{.id}}')")
}

// useFormat makes a's stdout apply cmd's --format template, when it was
// given, to the JSON the command writes.
func (a *app) useFormat(cmd *cobra.Command) error {
	fl := cmd.Flags().Lookup("format")
	if fl == nil || !fl.Changed {
		return nil
	}
	f, ok := fl.Value.(*formatFlag)
	if !ok {
		return nil // a command's own --format
	}
	t, err := template.New("format").Option("missingkey=error").Funcs(formatFuncs).Parse(f.tmpl)
	if err != nil {
		return usageErrorf(cmd.CommandPath(), "--format: %v", err)
	}
	a.stdout = &formatWriter{w: a.stdout, t: t}
	return nil
}

// formatFuncs are the functions a --format template may call: json prints
// a value as compact JSON.
var formatFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// formatWriter applies a template to each JSON value written to it. Each
// Write must hold whole JSON values (writeJSON writes one per call); what
// is not JSON passes through.
type formatWriter struct {
	w io.Writer
	t *template.Template
}

func (f *formatWriter) Write(p []byte) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	var out bytes.Buffer
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			return f.w.Write(p)
		}
		items := []any{v}
		if list, ok := v.([]any); ok {
			items = list
		}
		for _, it := range items {
			if err := f.t.Execute(&out, it); err != nil {
				return 0, fmt.Errorf("--format: %w", err)
			}
			out.WriteByte('\n')
		}
	}
	if _, err := f.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}
