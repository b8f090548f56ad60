;; Imports nanodc.log with the wrong type.
(module
  (import "nanodc" "log" (func (param i32)))
  (memory (export "memory") 1))
