// Package yamlstrict decodes YAML written by people: unknown fields are errors (a typo must
// not silently fall back to a default) and every error names the field path, not just the
// line, so "connmgr.low: line 4: cannot unmarshal !!str `lots` into int".
package yamlstrict

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Unmarshal decodes data over v (fields absent from data keep their value). An empty
// document is not an error.
func Unmarshal(data []byte, v any) error {
	var tree yaml.Node
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return err
	}
	return strict(data, &tree, v)
}

// DecodeNode decodes a parsed sub-tree (one workload's parameters, say) strictly into v,
// naming fields relative to the sub-tree. yaml.v3's Node.Decode has no strict mode, so the
// sub-tree is re-encoded and decoded as text.
func DecodeNode(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	return Unmarshal(data, v)
}

// strict decodes text with unknown fields refused and maps yaml.v3's line-numbered type
// errors to field paths found in tree.
func strict(text []byte, tree *yaml.Node, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := yamlLine.FindStringSubmatch(e); m != nil {
			line, _ := strconv.Atoi(m[1])
			if path := FieldAtLine(tree, line, ""); path != "" {
				e = path + ": " + e
			}
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "; "))
}

// FieldAtLine finds the dotted key path of the mapping entry written on line.
func FieldAtLine(n *yaml.Node, line int, prefix string) string {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", prefix, i)
			}
			if c.Line == line && n.Kind == yaml.SequenceNode && c.Kind == yaml.ScalarNode {
				return p
			}
			if f := FieldAtLine(c, line, p); f != "" {
				return f
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			p := key.Value
			if prefix != "" {
				p = prefix + "." + key.Value
			}
			if key.Line == line || val.Line == line && val.Kind == yaml.ScalarNode {
				return p
			}
			if f := FieldAtLine(val, line, p); f != "" {
				return f
			}
		}
	}
	return ""
}
