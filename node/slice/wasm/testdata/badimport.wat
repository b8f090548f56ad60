;; Imports a function no nanodc runtime provides.
(module
  (import "env" "open_socket" (func (param i32) (result i32)))
  (memory (export "memory") 1))
