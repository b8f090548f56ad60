;; Asks for a timer every 10 ms but takes 50 ms (a WASI sleep) to handle each tick: ticks must
;; be skipped, not queued, and no goroutines may pile up.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "nanodc" "timer_set" (func $timer_set (param i32)))
  (import "nanodc" "metric_add" (func $metric_add (param i32 i32 f64)))
  (memory (export "memory") 1)
  (data (i32.const 256) "ticks")
  (func (export "init") (call $timer_set (i32.const 10)))
  (func (export "on_timer")
    (call $metric_add (i32.const 256) (i32.const 5) (f64.const 1))
    ;; clock subscription at 0: tag 0 at 8, monotonic clock at 16, 50 ms at 24
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 50000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
