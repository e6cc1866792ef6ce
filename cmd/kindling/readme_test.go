package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readmeMarker marks a README code block as runnable: the line before its
// opening fence. TestReadme runs every ```sh block so marked, in order, as
// one script against the fake Firecracker, so a README change that breaks
// the walk-through fails CI.
const readmeMarker = "<!-- readme-test -->"

// TestReadme runs the README's marked command blocks.
func TestReadme(t *testing.T) {
	blocks, err := readmeBlocks(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) == 0 {
		t.Fatalf("README.md has no block marked %s", readmeMarker)
	}
	var script strings.Builder
	script.WriteString("# The README's runnable blocks, converted by TestReadme.\n\n")
	for _, b := range blocks {
		for _, line := range b {
			cmds, err := readmeCommands(line)
			if err != nil {
				t.Fatalf("README.md: %v", err)
			}
			for _, c := range cmds {
				script.WriteString(c + "\n")
			}
		}
	}
	script.WriteString("nothingleft\n")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "readme.txtar"), []byte(script.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("script:\n%s", script.String())
	runScriptsIn(t, dir, fakeFirecracker(t), "fake")
}

// readmeBlocks returns the lines of the ```sh blocks of the Markdown file
// at path that follow readmeMarker.
func readmeBlocks(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		blocks [][]string
		marked bool // the previous line was the marker
		in     bool // inside a marked block
	)
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case in && strings.HasPrefix(line, "```"):
			in = false
		case in:
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], line)
		case marked:
			if strings.TrimSpace(line) != "```sh" {
				return nil, fmt.Errorf("%s:%d: %s must be followed by a ```sh block", path, n, readmeMarker)
			}
			in = true
			blocks = append(blocks, nil)
		}
		marked = strings.TrimSpace(line) == readmeMarker
	}
	if in {
		return nil, fmt.Errorf("%s: a marked block is not closed", path)
	}
	return blocks, sc.Err()
}

// readmeCommands turns one line of shell from the README into testscript
// commands: a trailing comment is dropped, "a && b" becomes two commands
// (each must succeed, as && asks), and every program is run with exec.
// Only the shell the README uses is understood: words, single and double
// quotes, && and comments; anything else is an error, so that the README
// stays plain enough to be read as it is run.
func readmeCommands(line string) ([]string, error) {
	words, err := shellWords(line)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", line, err)
	}
	var out []string
	var cur []string
	flush := func() error {
		if len(cur) == 0 {
			return fmt.Errorf("%q: empty command around &&", line)
		}
		out = append(out, "exec "+strings.Join(cur, " "))
		cur = nil
		return nil
	}
	for _, w := range words {
		if w.op == "&&" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, "'"+strings.ReplaceAll(w.text, "'", "''")+"'")
	}
	if len(cur) == 0 {
		if len(out) > 0 {
			return nil, fmt.Errorf("%q: empty command after &&", line)
		}
		return nil, nil // blank or comment
	}
	return out, flush()
}

// shellWord is a word of a shell line, or an operator (op set).
type shellWord struct {
	text string
	op   string
}

// shellWords splits a line as a shell would, for the subset readmeCommands
// takes.
func shellWords(line string) ([]shellWord, error) {
	var (
		words []shellWord
		cur   strings.Builder
		have  bool // cur holds a word (maybe empty, from "")
	)
	end := func() {
		if have {
			words = append(words, shellWord{text: cur.String()})
		}
		cur.Reset()
		have = false
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			end()
		case c == '#' && !have:
			end()
			return words, nil
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("unclosed %c", c)
			}
			q := line[i+1 : i+1+j]
			if c == '"' && strings.ContainsAny(q, "$`\\") {
				return nil, fmt.Errorf("expansion in double quotes is not supported")
			}
			cur.WriteString(q)
			have = true
			i += j + 1
		case c == '&' && strings.HasPrefix(line[i:], "&&"):
			end()
			words = append(words, shellWord{op: "&&"})
			i++
		case strings.IndexByte("|;<>&$`\\(){}*?[]~", c) >= 0:
			return nil, fmt.Errorf("shell syntax %q is not supported in a README test block", c)
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	end()
	return words, nil
}

func TestReadmeCommands(t *testing.T) {
	tests := []struct {
		line    string
		want    []string
		wantErr bool
	}{
		{"kindling ps   # comment", []string{"exec 'kindling' 'ps'"}, false},
		{"# only a comment", nil, false},
		{"", nil, false},
		{"kindling pause web && kindling resume web", []string{"exec 'kindling' 'pause' 'web'", "exec 'kindling' 'resume' 'web'"}, false},
		{`kindling run --label 'a=b c' --name "x y"`, []string{"exec 'kindling' 'run' '--label' 'a=b c' '--name' 'x y'"}, false},
		{"echo it's", nil, true},
		{"kindling ps | wc -l", nil, true},
		{"kindling run $X", nil, true},
		{"a && ", nil, true},
		{"&& a", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			got, err := readmeCommands(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readmeCommands(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("readmeCommands(%q) = %q, want %q", tt.line, got, tt.want)
			}
		})
	}
}
