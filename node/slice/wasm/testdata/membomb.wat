;; Grows memory one page at a time until memory.grow fails.
;; handle_http then answers with the page count reached (4 bytes, little endian);
;; on_message traps instead, as a guest with no way to handle the failure would.
(module
  (import "nanodc" "respond" (func $respond (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (func $grow_all
    (loop $more
      (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))))
  (func (export "handle_http")
    (call $grow_all)
    (i32.store (i32.const 0) (memory.size))
    (call $respond (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)))
  (func (export "on_message")
    (call $grow_all)
    unreachable))
