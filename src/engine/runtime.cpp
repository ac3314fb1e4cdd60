#include <featlearn/dist/launch.h>
#include <featlearn/engine/commands.h>
#include <torch/utils.h>
#include <unistd.h>

#include <cstdlib>

namespace featlearn {

// OMP_NUM_THREADS when set, else the cores shared among the LOCAL_WORLD_SIZE workers of a distributed run
// (docs/distributed.md, "Launching").
void init_runtime() { torch::set_num_threads(threads_per_process()); }

// Debian 12's OpenBLAS (0.3.21) does not recognise recent Xeons (e.g. Sapphire Rapids) and falls back to its
// generic "Prescott" kernels: matrix products run ~4x slower. The core type can only be chosen through the
// environment before the library is loaded, so the program re-executes itself once with OPENBLAS_CORETYPE set
// from the CPU's features. A user's own OPENBLAS_CORETYPE is respected.
void ensure_blas_coretype(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("FEATLEARN_NO_REEXEC")) return;
  const char* type = nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    type = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    type = "Haswell";
  if (!type) return;
  setenv("OPENBLAS_CORETYPE", type, 1);
  setenv("FEATLEARN_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run on with the generic kernels
}

}  // namespace featlearn
