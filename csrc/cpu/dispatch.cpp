// Run-time choice of the CPU kernels: the fastest build the processor runs. "avx2" (AVX2 +
// FMA: 8 atoms per instruction, several times faster than the baseline) and "avx512"
// (the same source compiled with AVX-512 too: 32 vector registers and fast gathers). The
// environment variable DIFFFIT_CPU=baseline|avx2 caps the choice (tests use it to check
// every build on one machine).
#include <cstdlib>
#include <cstring>

#include "difffit/kernels.h"

namespace difffit {

namespace {
enum class Variant { baseline, avx2, avx512 };

Variant pick() {
#ifdef DIFFFIT_HAVE_AVX2
  const char* cap = std::getenv("DIFFFIT_CPU");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  if (cap && !std::strcmp(cap, "baseline")) return Variant::baseline;
  if (avx512 && !(cap && !std::strcmp(cap, "avx2"))) return Variant::avx512;
  if (avx2) return Variant::avx2;
#endif
  return Variant::baseline;
}

Variant variant() {
  static const Variant v = pick();
  return v;
}
}  // namespace

const char* cpu_variant() {
  switch (variant()) {
    case Variant::avx512: return "avx512";
    case Variant::avx2: return "avx2";
    default: return "baseline";
  }
}

#ifdef DIFFFIT_HAVE_AVX2
#define DIFFFIT_DISPATCH(fn, Args)                             \
  template <typename T>                                        \
  void fn(const Args<T>& a) {                                  \
    switch (variant()) {                                       \
      case Variant::avx512: return avx512::fn<T>(a);           \
      case Variant::avx2: return avx2::fn<T>(a);               \
      default: return base::fn<T>(a);                          \
    }                                                          \
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
