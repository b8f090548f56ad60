;; Echo for the fuzz test and the pub/sub test.
;; handle_http: the request body is [status lo, status hi, ctlen, content-type..., payload...];
;; the guest answers with that status, content type and payload, trusting whatever it was sent
;; (the host must cope). A body shorter than 3 bytes gets 400.
;; on_message: publishes the message data to "echoed" and deletes the kv key named by the topic.
(module
  (import "nanodc" "request_body" (func $request_body (param i32 i32) (result i32)))
  (import "nanodc" "respond" (func $respond (param i32 i32 i32 i32 i32)))
  (import "nanodc" "message_topic" (func $message_topic (param i32 i32) (result i32)))
  (import "nanodc" "message_data" (func $message_data (param i32 i32) (result i32)))
  (import "nanodc" "publish" (func $publish (param i32 i32 i32 i32) (result i32)))
  (import "nanodc" "kv_delete" (func $kv_delete (param i32 i32) (result i32)))
  (memory (export "memory") 40) ;; 2.5 MiB: room for a 1 MiB body and a 1 MiB message
  (data (i32.const 0) "echoed")
  (func (export "handle_http") (local $n i32) (local $ct i32)
    (local.set $n (call $request_body (i32.const 1024) (i32.const 1048576)))
    (if (i32.lt_s (local.get $n) (i32.const 3))
      (then
        (call $respond (i32.const 400) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
        (return)))
    (local.set $ct (i32.load8_u (i32.const 1026)))
    (call $respond
      (i32.load16_u (i32.const 1024))
      (i32.const 1027) (local.get $ct)
      (i32.add (i32.const 1027) (local.get $ct))
      (i32.sub (local.get $n) (i32.add (i32.const 3) (local.get $ct)))))
  (func (export "on_message") (local $t i32) (local $d i32)
    (local.set $t (call $message_topic (i32.const 64) (i32.const 256)))
    (local.set $d (call $message_data (i32.const 1049600) (i32.const 1048576)))
    (drop (call $publish (i32.const 0) (i32.const 6) (i32.const 1049600) (local.get $d)))
    (drop (call $kv_delete (i32.const 64) (local.get $t)))))
