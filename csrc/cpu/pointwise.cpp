// The CUDA kernels' per-placement code run serially on the CPU, for tests only (see
// kernels.h): a CPU-only test run then checks the arithmetic each GPU thread runs, which
// the CPU kernels, blocked and vectorised, do not execute. Compiled with the baseline
// instruction set, so without FMA, as the CUDA build (--fmad=false): each point rounds as
// on the GPU. The sums are in T, as on the GPU; only their order differs (the GPU reduces
// over a team of threads).
#include "difffit/kernels.h"

namespace difffit {

template <typename T>
void score_pointwise_cpu(const ScoreArgs<T>& a) {
  for (int64_t p = 0; p < a.place.n_place; ++p) {
    ScoreAcc<T> acc;
    const int64_t n = score_share(a, a.weights, p, 0, 1, acc);
    score_write(a, p, acc, n);
  }
}

template <typename T>
void stats_pointwise_cpu(const StatsArgs<T>& a) {
  for (int64_t p = 0; p < a.place.n_place; ++p) {
    StatsAcc<T> acc;
    stats_share(a, p, 0, 1, acc);
    for (int k = 0; k < kNumStats; ++k) a.stats[kNumStats * p + k] = acc.v[k];
  }
}

template void score_pointwise_cpu<float>(const ScoreArgs<float>&);
template void score_pointwise_cpu<double>(const ScoreArgs<double>&);
template void stats_pointwise_cpu<float>(const StatsArgs<float>&);
template void stats_pointwise_cpu<double>(const StatsArgs<double>&);

}  // namespace difffit
