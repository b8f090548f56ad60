;; Tries to leave its WASI directory every way it can. handle_http answers with seven WASI
;; errnos (4 bytes each, little endian), in this order:
;;   0 create "../escape"             4 symlink "esc" -> "../../escape-dir"
;;   1 create "/nanodc-wasm-escape"   5 create "ok.txt" (must succeed)
;;   2 read   "../../etc/passwd"      6 read   "/etc/passwd" (absolute: resolved inside the dir)
;;   3 create "link/escape" where the test made "link" a symlink to a directory outside
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink"
    (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "nanodc" "respond" (func $respond (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "../escape")
  (data (i32.const 16) "/nanodc-wasm-escape")
  (data (i32.const 48) "../../etc/passwd")
  (data (i32.const 80) "link/escape")
  (data (i32.const 96) "../../escape-dir")
  (data (i32.const 128) "esc")
  (data (i32.const 136) "ok.txt")
  (data (i32.const 144) "/etc/passwd")
  ;; open path (ptr,len) with oflags, storing the errno at out
  (func $open (param $ptr i32) (param $len i32) (param $oflags i32) (param $out i32)
    (i32.store (local.get $out)
      (call $path_open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
        (local.get $oflags) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 1020))))
  (func (export "handle_http")
    (call $open (i32.const 0) (i32.const 9) (i32.const 1) (i32.const 1024))
    (call $open (i32.const 16) (i32.const 19) (i32.const 1) (i32.const 1028))
    (call $open (i32.const 48) (i32.const 16) (i32.const 0) (i32.const 1032))
    (call $open (i32.const 80) (i32.const 11) (i32.const 1) (i32.const 1036))
    (i32.store (i32.const 1040)
      (call $path_symlink (i32.const 96) (i32.const 16) (i32.const 3) (i32.const 128) (i32.const 3)))
    (call $open (i32.const 136) (i32.const 6) (i32.const 1) (i32.const 1044))
    (call $open (i32.const 144) (i32.const 11) (i32.const 0) (i32.const 1048))
    (call $respond (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 1024) (i32.const 28))))
