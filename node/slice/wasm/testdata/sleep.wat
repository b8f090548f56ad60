;; Sleeps 10 s through WASI poll_oneoff on every HTTP request: the sleep must end with the
;; call's deadline, not hold the app (and the request) for 10 s.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle_http")
    ;; one clock subscription at 0: tag 0 (clock) at 8, clock id 1 (monotonic) at 16,
    ;; relative timeout 10 s at 24; events at 64, count at 128
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 10000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
