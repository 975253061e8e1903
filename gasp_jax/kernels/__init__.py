"""Native CPU kernels compiled on first use and called through the XLA FFI (cpu_gemm: packed fp32 GEMM)."""
