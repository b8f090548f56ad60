;; Spins forever on every HTTP request; only the call timeout can stop it.
(module
  (memory (export "memory") 1)
  (func (export "handle_http") (loop $forever (br $forever))))
