;; counter: the smallest useful nanodc app, written by hand so it needs no language runtime.
;; GET (any path) increments a counter kept in the slice's key-value store and answers
;; {"count":N}; every request is logged and counted in the metric "requests"; a 500 ms timer
;; counts "ticks". The count is stored as 4 bytes, little endian, under the key "count".
;; Build: wat2wasm counter.wat -o counter.wasm   (scripts/build-wasm.sh)
(module
  (import "nanodc" "log" (func $log (param i32 i32 i32)))
  (import "nanodc" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (import "nanodc" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "nanodc" "metric_add" (func $metric_add (param i32 i32 f64)))
  (import "nanodc" "timer_set" (func $timer_set (param i32)))
  (import "nanodc" "respond" (func $respond (param i32 i32 i32 i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (data (i32.const 8) "application/json")
  (data (i32.const 32) "requests")
  (data (i32.const 48) "ticks")
  (data (i32.const 64) "counter: ready")
  (data (i32.const 80) "counter: hit")
  (data (i32.const 96) "{\"count\":")
  (data (i32.const 160) "{\"error\":\"kv_put failed\"}")

  (func (export "init")
    (call $timer_set (i32.const 500))
    (call $log (i32.const 0) (i32.const 64) (i32.const 14)))

  (func (export "on_timer")
    (call $metric_add (i32.const 48) (i32.const 5) (f64.const 1)))

  (func (export "handle_http") (local $n i32) (local $p i32) (local $i i32)
    ;; n = stored count + 1 (a missing key reads as 0)
    (if (i32.eq (call $kv_get (i32.const 0) (i32.const 5) (i32.const 128) (i32.const 4)) (i32.const 4))
      (then (local.set $n (i32.load (i32.const 128)))))
    (local.set $n (i32.add (local.get $n) (i32.const 1)))
    (i32.store (i32.const 128) (local.get $n))
    (if (call $kv_put (i32.const 0) (i32.const 5) (i32.const 128) (i32.const 4))
      (then
        (call $respond (i32.const 507) (i32.const 8) (i32.const 16) (i32.const 160) (i32.const 25))
        (return)))
    ;; decimal digits written backwards, ending before the '}' at 300
    (i32.store8 (i32.const 300) (i32.const 125))
    (local.set $p (i32.const 300))
    (loop $digits
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    ;; then the 9-byte prefix {"count": in front of them
    (local.set $i (i32.const 9))
    (loop $prefix
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.load8_u (i32.add (i32.const 96) (local.get $i))))
      (br_if $prefix (local.get $i)))
    (call $metric_add (i32.const 32) (i32.const 8) (f64.const 1))
    (call $log (i32.const 0) (i32.const 80) (i32.const 12))
    (call $respond (i32.const 200) (i32.const 8) (i32.const 16)
      (local.get $p) (i32.sub (i32.const 301) (local.get $p)))))
