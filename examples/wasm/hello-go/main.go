//go:build wasip1

// Command hello-go is a nanodc app written in Go, built for GOOS=wasip1 GOARCH=wasm.
//
// Built as a WASI reactor (go build -buildmode=c-shared, what nanodc deploys) main does not run:
// the host calls the exported handle_http, which answers with a JSON greeting and counts visits
// in visits.txt in the app's WASI storage (the slice's directory). Built as a plain WASI command
// (no -buildmode), main runs once instead: it writes hello.txt and exits, which nanodc records
// as an app that ran to completion. scripts/build-wasm.sh builds both.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// The nanodc host ABI (node/slice/wasm/ABI.md). A Go string parameter is passed as (ptr, len).

//go:wasmimport nanodc log
func hostLog(level int32, msg string)

//go:wasmimport nanodc metric_add
func metricAdd(name string, delta float64)

//go:wasmimport nanodc request_method
func requestMethod(ptr unsafe.Pointer, capacity int32) int32

//go:wasmimport nanodc request_path
func requestPath(ptr unsafe.Pointer, capacity int32) int32

//go:wasmimport nanodc respond
func respond(status int32, contentType string, body unsafe.Pointer, bodyLen int32)

// fetch reads a value the host hands out by the (ptr, cap) -> length convention: a result
// larger than the buffer is the size to retry with.
func fetch(get func(unsafe.Pointer, int32) int32) string {
	buf := make([]byte, 256)
	for {
		n := get(unsafe.Pointer(unsafe.SliceData(buf)), int32(len(buf)))
		if n < 0 {
			return ""
		}
		if int(n) <= len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, n)
	}
}

func reply(status int32, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = 500, []byte(`{"error":"encoding the reply failed"}`)
	}
	respond(status, "application/json", unsafe.Pointer(unsafe.SliceData(body)), int32(len(body)))
}

type greeting struct {
	Greeting string   `json:"greeting"`
	Method   string   `json:"method"`
	Path     string   `json:"path"`
	Visits   int      `json:"visits"`
	Files    []string `json:"files"` // what the app's storage holds
}

//go:wasmexport handle_http
func handleHTTP() {
	visits, err := bumpVisits()
	if err != nil {
		hostLog(8, "hello-go: "+err.Error())
		reply(500, map[string]string{"error": err.Error()})
		return
	}
	var files []string
	entries, err := os.ReadDir(".")
	if err != nil {
		reply(500, map[string]string{"error": err.Error()})
		return
	}
	for _, e := range entries {
		files = append(files, e.Name())
	}
	metricAdd("greetings", 1)
	reply(200, greeting{
		Greeting: "hello from Go on nanodc",
		Method:   fetch(requestMethod),
		Path:     fetch(requestPath),
		Visits:   visits,
		Files:    files,
	})
}

// bumpVisits counts requests in a file: the WASI directory is the slice's own storage.
func bumpVisits() (int, error) {
	n := 0
	b, err := os.ReadFile("visits.txt")
	switch {
	case err == nil:
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	case !errors.Is(err, fs.ErrNotExist):
		return 0, err
	}
	n++
	return n, os.WriteFile("visits.txt", []byte(strconv.Itoa(n)+"\n"), 0o644)
}

func main() {
	if err := os.WriteFile("hello.txt", []byte("hello from a Go WASI command\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "hello-go:", err)
		os.Exit(1)
	}
	fmt.Println("hello-go: ran as a WASI command")
}
