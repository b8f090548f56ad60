;; Traps on every HTTP request.
(module
  (memory (export "memory") 1)
  (func (export "handle_http") unreachable))
