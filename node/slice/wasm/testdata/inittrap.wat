;; Traps in init.
(module
  (memory (export "memory") 1)
  (func (export "init") unreachable))
