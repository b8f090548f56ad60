package yamlstrict

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type inner struct {
	Low  int      `yaml:"low"`
	List []string `yaml:"list"`
}

type outer struct {
	Name  string  `yaml:"name"`
	Inner inner   `yaml:"inner"`
	Items []inner `yaml:"items"`
}

func TestErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"inner:\n  low: lots\n", "inner.low: line 2"},
		{"items:\n  - low: 1\n  - low: x\n", "items[1].low"},
		{"inner:\n  list:\n    - a\n    - [b]\n", "inner.list[1]"},
		{"inner: {list: [a, [b]]}\n", "inner"}, // a flow collection on one line: the line names its key
		{"nmae: x\n", "field nmae not found"},
		{"name: [\n", "yaml"},
	} {
		var v outer
		err := Unmarshal([]byte(tc.in), &v)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%q) = %v, want it to mention %q", tc.in, err, tc.want)
		}
	}
}

func TestKeepsDefaultsAndAcceptsEmpty(t *testing.T) {
	v := outer{Name: "default", Inner: inner{Low: 7}}
	if err := Unmarshal([]byte("inner: {list: [a]}\n"), &v); err != nil {
		t.Fatal(err)
	}
	if v.Name != "default" || v.Inner.Low != 7 || len(v.Inner.List) != 1 {
		t.Fatalf("got %+v", v)
	}
	if err := Unmarshal(nil, &v); err != nil {
		t.Fatalf("empty document: %v", err)
	}
}

func TestDecodeNodeIsStrict(t *testing.T) {
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("low: 1\nlwo: 2\n"), &n); err != nil {
		t.Fatal(err)
	}
	var v inner
	if err := DecodeNode(n.Content[0], &v); err == nil || !strings.Contains(err.Error(), "lwo") {
		t.Fatalf("DecodeNode = %v, want an error naming lwo", err)
	}
}
