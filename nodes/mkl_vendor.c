/* Intel MKL chooses its GEMM kernels by CPU vendor: on a CPU that is not Intel's it takes a generic path even
 * where the CPU has the instructions (AVX2, FMA) of a faster one. MKL asks these two functions; a library that
 * defines them and is loaded before torch (RTLD_GLOBAL, so it precedes libtorch_cpu in symbol lookup) makes MKL
 * take the path the instruction set allows. Results stay IEEE float32 GEMMs (a different summation order only).
 * Built and loaded by nodes/blas.py; see nodes/backends/HF.md. */
int mkl_serv_intel_cpu_true(void) { return 1; }
int mkl_serv_intel_cpu(void) { return 1; }
