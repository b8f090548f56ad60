;; Exports no memory.
(module
  (func (export "handle_http")))
