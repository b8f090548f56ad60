package wasm

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzEchoRespond fuzzes the path guest bytes take back to the client. The ABI has no decoder
// of structured guest data (everything is raw bytes behind (ptr,len) pairs), so the untrusted
// input worth fuzzing is what a guest hands respond: status, content type and body, chosen
// here by the request (see testdata/echo.wat). The host must either answer exactly what the
// guest asked for (sanitised) or fault the app; it must never panic or hang.
func FuzzEchoRespond(f *testing.F) {
	r := newRuntime(f)
	bin := wat(f, "testdata/echo.wat")
	host := newMemHost()
	startEcho := func() *App {
		a, err := r.Start(context.Background(), Config{Name: "echo", Module: bin, Host: host})
		if err != nil {
			f.Fatal(err)
		}
		return a
	}
	app := startEcho()
	f.Cleanup(func() { _ = app.Stop(context.Background()) })

	seed := func(status uint16, ct string, body string) []byte {
		b := binary.LittleEndian.AppendUint16(nil, status)
		b = append(b, byte(len(ct)))
		return append(append(b, ct...), body...)
	}
	f.Add(seed(200, "text/plain", "hello"))
	f.Add(seed(404, "application/json", `{"error":"no"}`))
	f.Add(seed(99, "", ""))
	f.Add(seed(700, "text/html\r\nSet-Cookie: x=1", "<p>"))
	f.Add(seed(200, "\x00\xff", "\x00\x01"))
	f.Add([]byte{200, 0, 200, 'x'}) // content type longer than the body: the guest traps
	f.Add([]byte{1})

	f.Fuzz(func(t *testing.T, in []byte) {
		if isDone(app) {
			app = startEcho()
		}
		rec := httptest.NewRecorder()
		app.ServeHTTP(rec, httptest.NewRequest("POST", "/", bytes.NewReader(in)))
		if len(in) < 3 {
			if rec.Code != 400 {
				t.Fatalf("short body: %d", rec.Code)
			}
			return
		}
		ctLen := int(in[2])
		if 3+ctLen > len(in) {
			// The guest asked for a negative body length: out of bounds, so it faults.
			if rec.Code != 503 || !isDone(app) {
				t.Fatalf("bad lengths: %d, done %v", rec.Code, isDone(app))
			}
			if code, reason := app.Fault(); code != FaultWhileActive || !strings.Contains(reason, "out of bounds") {
				t.Fatalf("fault %q %q", code, reason)
			}
			return
		}
		status := int(binary.LittleEndian.Uint16(in))
		if status < 200 || status > 599 {
			status = 500
		}
		ct := string(in[3 : 3+ctLen])
		if !validContentType(ct) {
			ct = "application/octet-stream"
		}
		if rec.Code != status || rec.Header().Get("Content-Type") != ct {
			t.Fatalf("got %d %q, want %d %q", rec.Code, rec.Header().Get("Content-Type"), status, ct)
		}
		// httptest drops bodies of statuses that cannot have one, like a real server.
		if want := in[3+ctLen:]; bodyAllowed(status) && !bytes.Equal(rec.Body.Bytes(), want) {
			t.Fatalf("body %q, want %q", rec.Body.Bytes(), want)
		}
	})
}

func bodyAllowed(status int) bool { return status != 204 && status != 304 }
