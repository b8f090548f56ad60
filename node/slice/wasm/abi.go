package wasm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// hostModule is the import module name of the nanodc ABI (see ABI.md).
const hostModule = "nanodc"

// Return codes of ABI functions that return an i32 status (see ABI.md).
const (
	rcMissing  = -1 // kv_get: no such key; request_*/message_*: not in that kind of call
	rcHostErr  = -2 // the host refused or failed (quota, storage, pub/sub)
	rcInvalid  = -3 // an argument was invalid (empty or over-long key or topic, bad UTF-8)
	maxKeyLen  = 1024
	maxTopic   = 256
	maxLogLen  = 4096
	maxCTLen   = 256
	maxSvcPath = 1024
	maxMetric  = 128
	minTimerMS = 10
)

// callState is what the host functions of one guest call see: the app, and the request or
// message the call is about. It travels in the context passed to api.Function.Call, which lets
// one instance of the host module serve every app on the runtime.
type callState struct {
	app  *App
	req  *request
	msg  *message
	resp *response
	svc  []byte // body of the last service_call's answer in this call; nil: none yet
}

type request struct {
	method, uri string
	body        []byte
}

type message struct {
	topic string
	data  []byte
}

type response struct {
	status int
	ctype  string
	body   []byte
}

type callKey struct{}

func stateOf(ctx context.Context) *callState {
	cs, _ := ctx.Value(callKey{}).(*callState)
	if cs == nil {
		// Only reachable if a guest call was made without going through App.call.
		panic("nanodc: host function called outside an app call")
	}
	return cs
}

// trapError is panicked by host functions when the guest passes memory it does not have; wazero
// turns the panic into a failed call, so the app faults like on any other trap.
type trapError string

func (e trapError) Error() string { return string(e) }

func read(mod api.Module, ptr, n uint32, what string) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		panic(trapError(fmt.Sprintf("%s: out of bounds memory (ptr %d, len %d)", what, ptr, n)))
	}
	return b
}

// copyOut is the one convention for handing bytes to the guest: the full length is returned and
// the bytes are copied only when they fit, so a guest with a small buffer learns the size to ask
// for and never receives a silently truncated value.
func copyOut(mod api.Module, ptr, capacity uint32, data []byte, what string) int32 {
	if len(data) > math.MaxInt32 {
		return rcHostErr
	}
	if uint64(len(data)) <= uint64(capacity) && len(data) > 0 {
		if !mod.Memory().Write(ptr, data) {
			panic(trapError(fmt.Sprintf("%s: out of bounds memory (ptr %d, cap %d)", what, ptr, capacity)))
		}
	}
	return int32(len(data))
}

// name reads a key or topic: 1..limit bytes of UTF-8 without NUL.
func name(mod api.Module, ptr, n uint32, limit int, what string) (string, bool) {
	if n == 0 || int(n) > limit {
		return "", false
	}
	s := string(read(mod, ptr, n, what))
	return s, utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func validMetricName(s string) bool {
	if s == "" || len(s) > maxMetric {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// validContentType accepts what can go into a header unchanged: printable ASCII.
func validContentType(s string) bool {
	if s == "" || len(s) > maxCTLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func clampLevel(l int32) slog.Level {
	return slog.Level(min(max(l, int32(slog.LevelDebug)), int32(slog.LevelError)))
}

var (
	i32 = api.ValueTypeI32
	f64 = api.ValueTypeF64
)

type hostFn struct {
	name    string
	params  []api.ValueType
	results []api.ValueType
	names   []string
	fn      api.GoModuleFunc
}

// abi lists the host functions. ABI.md documents them; keep the two in step.
var abi = []hostFn{
	{"log", []api.ValueType{i32, i32, i32}, nil, []string{"level", "ptr", "len"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			b := read(mod, api.DecodeU32(s[1]), min(api.DecodeU32(s[2]), maxLogLen), "log")
			a.host.Log(clampLevel(api.DecodeI32(s[0])), strings.ToValidUTF8(string(b), "\uFFFD"))
		}},
	{"kv_get", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, []string{"kptr", "klen", "vptr", "vcap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			key, ok := name(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), maxKeyLen, "kv_get")
			if !ok {
				s[0] = api.EncodeI32(rcInvalid)
				return
			}
			val, found, err := a.host.KVGet(key)
			switch {
			case err != nil:
				a.logger.Debug("kv_get failed", "key", key, "err", err)
				s[0] = api.EncodeI32(rcHostErr)
			case !found:
				s[0] = api.EncodeI32(rcMissing)
			default:
				s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[2]), api.DecodeU32(s[3]), val, "kv_get"))
			}
		}},
	{"kv_put", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, []string{"kptr", "klen", "vptr", "vlen"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			key, ok := name(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), maxKeyLen, "kv_put")
			if !ok {
				s[0] = api.EncodeI32(rcInvalid)
				return
			}
			val := append([]byte(nil), read(mod, api.DecodeU32(s[2]), api.DecodeU32(s[3]), "kv_put")...)
			if err := a.host.KVPut(key, val); err != nil {
				a.logger.Debug("kv_put refused", "key", key, "err", err)
				s[0] = api.EncodeI32(rcHostErr)
				return
			}
			s[0] = 0
		}},
	{"kv_delete", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"kptr", "klen"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			key, ok := name(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), maxKeyLen, "kv_delete")
			if !ok {
				s[0] = api.EncodeI32(rcInvalid)
				return
			}
			if err := a.host.KVDelete(key); err != nil {
				a.logger.Debug("kv_delete failed", "key", key, "err", err)
				s[0] = api.EncodeI32(rcHostErr)
				return
			}
			s[0] = 0
		}},
	{"publish", []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}, []string{"tptr", "tlen", "dptr", "dlen"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			topic, ok := name(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), maxTopic, "publish")
			if !ok {
				s[0] = api.EncodeI32(rcInvalid)
				return
			}
			data := append([]byte(nil), read(mod, api.DecodeU32(s[2]), api.DecodeU32(s[3]), "publish")...)
			if err := a.host.Publish(topic, data); err != nil {
				a.logger.Debug("publish refused", "topic", topic, "err", err)
				s[0] = api.EncodeI32(rcHostErr)
				return
			}
			s[0] = 0
		}},
	{"metric_add", []api.ValueType{i32, i32, f64}, nil, []string{"nptr", "nlen", "delta"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			a := stateOf(ctx).app
			n := api.DecodeU32(s[1])
			if n == 0 || n > maxMetric {
				return
			}
			metric := string(read(mod, api.DecodeU32(s[0]), n, "metric_add"))
			delta := api.DecodeF64(s[2])
			// Counters only go up; a bad name or value is dropped rather than trapping the app.
			if !validMetricName(metric) || math.IsNaN(delta) || math.IsInf(delta, 0) || delta < 0 {
				return
			}
			a.host.Metric(metric, delta)
		}},
	{"timer_set", []api.ValueType{i32}, nil, []string{"ms"},
		func(ctx context.Context, _ api.Module, s []uint64) {
			ms := api.DecodeI32(s[0])
			if ms < 0 {
				return
			}
			d := time.Duration(ms) * time.Millisecond
			if ms > 0 && ms < minTimerMS {
				d = minTimerMS * time.Millisecond
			}
			stateOf(ctx).app.setTimer(d)
		}},
	{"request_method", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			req := stateOf(ctx).req
			if req == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), []byte(req.method), "request_method"))
		}},
	{"request_path", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			req := stateOf(ctx).req
			if req == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), []byte(req.uri), "request_path"))
		}},
	{"request_body", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			req := stateOf(ctx).req
			if req == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), req.body, "request_body"))
		}},
	{"respond", []api.ValueType{i32, i32, i32, i32, i32}, nil, []string{"status", "ctptr", "ctlen", "bptr", "blen"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			cs := stateOf(ctx)
			if cs.req == nil {
				return
			}
			status := int(api.DecodeI32(s[0]))
			if status < 200 || status > 599 {
				// 1xx would leave the client waiting for a final answer; anything else is nonsense.
				cs.app.logger.Debug("respond: invalid status, sending 500", "status", status)
				status = 500
			}
			ct := string(read(mod, api.DecodeU32(s[1]), min(api.DecodeU32(s[2]), maxCTLen+1), "respond"))
			if !validContentType(ct) {
				ct = "application/octet-stream"
			}
			body := append([]byte(nil), read(mod, api.DecodeU32(s[3]), api.DecodeU32(s[4]), "respond")...)
			cs.resp = &response{status: status, ctype: ct, body: body}
		}},
	{"service_call", []api.ValueType{i32, i32, i32, i32, i32, i32}, []api.ValueType{i32},
		[]string{"nptr", "nlen", "pptr", "plen", "bptr", "blen"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			cs := stateOf(ctx)
			svc, ok1 := name(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), maxTopic, "service_call")
			path, ok2 := name(mod, api.DecodeU32(s[2]), api.DecodeU32(s[3]), maxSvcPath, "service_call")
			if !ok1 || !ok2 {
				s[0] = api.EncodeI32(rcInvalid)
				return
			}
			body := append([]byte(nil), read(mod, api.DecodeU32(s[4]), api.DecodeU32(s[5]), "service_call")...)
			status, resp, err := cs.app.host.CallService(ctx, svc, path, body)
			switch {
			case errors.Is(err, ErrNoService):
				s[0] = api.EncodeI32(rcMissing)
			case err != nil:
				cs.app.logger.Debug("service_call failed", "service", svc, "err", err)
				s[0] = api.EncodeI32(rcHostErr)
			default:
				cs.svc = append([]byte{}, resp...)
				s[0] = api.EncodeI32(int32(status))
			}
		}},
	{"service_response", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			cs := stateOf(ctx)
			if cs.svc == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), cs.svc, "service_response"))
		}},
	{"message_topic", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			msg := stateOf(ctx).msg
			if msg == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), []byte(msg.topic), "message_topic"))
		}},
	{"message_data", []api.ValueType{i32, i32}, []api.ValueType{i32}, []string{"ptr", "cap"},
		func(ctx context.Context, mod api.Module, s []uint64) {
			msg := stateOf(ctx).msg
			if msg == nil {
				s[0] = api.EncodeI32(rcMissing)
				return
			}
			s[0] = api.EncodeI32(copyOut(mod, api.DecodeU32(s[0]), api.DecodeU32(s[1]), msg.data, "message_data"))
		}},
}

// abiSignature maps a host function name to its definition, for checking a module's imports
// before instantiation so the error can say exactly which import is wrong.
var abiSignature = func() map[string]hostFn {
	m := make(map[string]hostFn, len(abi))
	for _, f := range abi {
		m[f.name] = f
	}
	return m
}()

// instantiateABI registers the nanodc host module on a wazero runtime, once per Runtime.
func instantiateABI(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(hostModule)
	for _, f := range abi {
		b = b.NewFunctionBuilder().
			WithGoModuleFunction(f.fn, f.params, f.results).
			WithParameterNames(f.names...).
			Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}
