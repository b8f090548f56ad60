;; Declares 32 MiB of initial memory: over the default cap of 16 MiB.
(module
  (memory (export "memory") 512))
