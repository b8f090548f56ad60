;; relay: shows the slice's private service registry. Any HTTP request is passed on to the
;; service "count" offered by another app of the same slice (the counter app, installed with
;; "provides": ["count"]), and that app's answer is relayed as is. Without such a service in
;; the slice it answers 404 {"error":"no service count"}; if the call fails, 502.
;; Build: wat2wasm relay.wat -o relay.wasm   (scripts/build-wasm.sh)
(module
  (import "nanodc" "service_call" (func $service_call (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "nanodc" "service_response" (func $service_response (param i32 i32) (result i32)))
  (import "nanodc" "respond" (func $respond (param i32 i32 i32 i32 i32)))

  (memory (export "memory") 1)
  (data (i32.const 0) "count")
  (data (i32.const 8) "/")
  (data (i32.const 16) "application/json")
  (data (i32.const 40) "{\"error\":\"no service count\"}")
  (data (i32.const 80) "{\"error\":\"service call failed\"}")

  (func (export "handle_http") (local $status i32) (local $n i32)
    (local.set $status (call $service_call (i32.const 0) (i32.const 5) (i32.const 8) (i32.const 1) (i32.const 0) (i32.const 0)))
    (if (i32.eq (local.get $status) (i32.const -1))
      (then
        (call $respond (i32.const 404) (i32.const 16) (i32.const 16) (i32.const 40) (i32.const 28))
        (return)))
    (if (i32.lt_s (local.get $status) (i32.const 0))
      (then
        (call $respond (i32.const 502) (i32.const 16) (i32.const 16) (i32.const 80) (i32.const 31))
        (return)))
    ;; the answer into 1024.. (one page holds 64 KiB; a longer answer is refused as 502)
    (local.set $n (call $service_response (i32.const 1024) (i32.const 60000)))
    (if (i32.gt_u (local.get $n) (i32.const 60000))
      (then
        (call $respond (i32.const 502) (i32.const 16) (i32.const 16) (i32.const 80) (i32.const 31))
        (return)))
    (call $respond (local.get $status) (i32.const 16) (i32.const 16) (i32.const 1024) (local.get $n))))
