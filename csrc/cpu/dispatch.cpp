// Run-time choice of the CPU kernels: the AVX2 + FMA build where the processor has them
// (several times faster: 8 atoms per instruction), else the baseline build. The
// environment variable DIFFFIT_CPU=baseline forces the baseline build (tests use it to
// check both builds on one machine).
#include <cstdlib>
#include <cstring>

#include "difffit/kernels.h"

namespace difffit {

namespace {
bool use_avx2() {
#ifdef DIFFFIT_HAVE_AVX2
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         !(std::getenv("DIFFFIT_CPU") && !std::strcmp(std::getenv("DIFFFIT_CPU"), "baseline"));
  return ok;
#else
  return false;
#endif
}
}  // namespace

const char* cpu_variant() { return use_avx2() ? "avx2" : "baseline"; }

#ifdef DIFFFIT_HAVE_AVX2
#define DIFFFIT_DISPATCH(fn, Args)                     \
  template <typename T>                                \
  void fn(const Args<T>& a) {                          \
    if (use_avx2()) return avx2::fn<T>(a);             \
    return base::fn<T>(a);                             \
  }
#else
#define DIFFFIT_DISPATCH(fn, Args) \
  template <typename T>            \
  void fn(const Args<T>& a) {      \
    return base::fn<T>(a);         \
  }
#endif

DIFFFIT_DISPATCH(score_cpu, ScoreArgs)
DIFFFIT_DISPATCH(stats_cpu, StatsArgs)
DIFFFIT_DISPATCH(splat_cpu, SplatArgs)

DIFFFIT_INSTANTIATE_CPU_ENTRY_POINTS

}  // namespace difffit
