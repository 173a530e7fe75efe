// Arguments and entry points of difffit's kernels. The CPU versions live in
// csrc/cpu/kernels_cpu.cpp, the CUDA versions in csrc/cuda/kernels.cu; both take the same
// argument structs, hold raw pointers only, and allocate nothing: the caller (Python, via
// csrc/bindings.cpp) allocates every output and checks shapes, dtypes and devices. Also the
// per-placement code the backends share (resolve_placement, and the CUDA kernels' per-thread
// loops score_share / stats_share).
#pragma once

#include <cstdint>
#include <vector>

#include "difffit/math.h"

namespace difffit {

// Ragged molecules: the centred points of molecule m are points[offsets[m]:offsets[m+1]].
// Placement p applies (quat[p], trans[p]) to molecule mol_idx[p].
template <typename T>
struct Placements {
  const T* quat;           // [P, 4] (w, x, y, z), not necessarily normalised
  const T* trans;          // [P, 3]
  const int64_t* mol_idx;  // [P]
  int64_t n_place;
};

// Placement p resolved: the rotation R of the normalised quaternion u (qnorm = |q|, for the
// gradient), the translation t, and its molecule m with the points [begin, end). An invalid
// mol_idx (Python rejects it before) gives no points rather than an out-of-bounds read.
template <typename T>
struct Placed {
  T u[4], R[9], qnorm;
  const T* t;
  int64_t m, begin, end;
};

template <typename T>
DF_HD Placed<T> resolve_placement(const Placements<T>& pl, const int64_t* offsets, int64_t n_mol,
                                  int64_t p) {
  Placed<T> r;
  r.qnorm = quat_to_matrix(pl.quat + 4 * p, r.u, r.R);
  r.t = pl.trans + 3 * p;
  r.m = pl.mol_idx[p];
  const bool valid = r.m >= 0 && r.m < n_mol;
  r.begin = valid ? offsets[r.m] : 0;
  r.end = valid ? offsets[r.m + 1] : 0;
  return r;
}

template <typename T>
struct ScoreArgs {
  VolumeView<T> vol;
  const T* weights;         // [nc] channel (pyramid level) weights
  const T* points;          // [A, 3] centred atom coordinates of all molecules
  const int64_t* offsets;   // [M + 1]
  int64_t n_mol;
  Placements<T> place;
  T* score;                 // [P] mean weighted density over the molecule's points
  T* grad_q;                // [P, 4] d score / d quat; null with grad_t: the score only (CPU)
  T* grad_t;                // [P, 3] d score / d trans
};

template <typename T>
struct StatsArgs {
  VolumeView<T> vol;
  int channel;              // which channel of vol to sample
  T threshold;              // d > threshold counts as inside the contour
  const T* points;          // [A, 3] centred points
  const T* point_weights;   // [A] e.g. simulated density at each point
  const int64_t* offsets;   // [M + 1]
  int64_t n_mol;
  Placements<T> place;
  T* stats;                 // [P, kNumStats], see math.h for the order
};

template <typename T>
struct SplatArgs {
  const T* points;          // [A, 3] world coordinates
  const T* amplitudes;      // [A]
  int64_t n_points;
  T sigma;                  // Gaussian sigma in Angstrom
  T cutoff;                 // truncation radius in units of sigma
  T* grid;                  // [nz, ny, nx], accumulated into (caller zero-fills)
  int nx, ny, nz;
  T ox, oy, oz;             // world position of voxel (0, 0, 0)
  T vx, vy, vz;             // voxel size
};

// One thread's share of placement p in the CUDA kernels: the sums over the points rank,
// rank + stride, ... of its molecule. The kernels call it with the thread's index within its
// team and the team's size and then reduce over the team; score_pointwise_cpu and
// stats_pointwise_cpu call it with (0, 1), so CPU-only test runs execute this code too.
// score_share returns the molecule's number of points (0 for an invalid mol_idx).
template <typename T, typename A>
DF_HD int64_t score_share(const ScoreArgs<T>& a, const T* w, int64_t p, int64_t rank,
                          int64_t stride, ScoreAcc<A>& acc) {
  const Placed<T> pl = resolve_placement(a.place, a.offsets, a.n_mol, p);
  for (int64_t i = pl.begin + rank; i < pl.end; i += stride)
    score_point(a.vol, w, pl.R, pl.t, a.points + 3 * i, acc);
  return pl.end - pl.begin;
}

// The score and gradients of placement p from its sums over n points. n == 0 (an invalid
// mol_idx; Python rejects empty molecules) writes NaNs, never crashes.
template <typename T, typename A>
DF_HD void score_write(const ScoreArgs<T>& a, int64_t p, const ScoreAcc<A>& acc, int64_t n) {
  T u[4], R[9];
  const T qn = quat_to_matrix(a.place.quat + 4 * p, u, R);
  score_finish(acc, n, u, qn, a.score + p, a.grad_q + 4 * p, a.grad_t + 3 * p);
}

template <typename T, typename A>
DF_HD void stats_share(const StatsArgs<T>& a, int64_t p, int64_t rank, int64_t stride,
                       StatsAcc<A>& acc) {
  const Placed<T> pl = resolve_placement(a.place, a.offsets, a.n_mol, p);
  for (int64_t i = pl.begin + rank; i < pl.end; i += stride)
    stats_point(a.vol, a.channel, a.threshold, pl.R, pl.t, a.points + 3 * i, a.point_weights[i], acc);
}

// CPU entry points; they dispatch at run time to the fastest compiled variant.
template <typename T> void score_cpu(const ScoreArgs<T>& a);
template <typename T> void stats_cpu(const StatsArgs<T>& a);
template <typename T> void splat_cpu(const SplatArgs<T>& a);
// out[i] = sum_c w[c] * vol[i * nc + c] for the n_voxels voxels of a volume (OpenMP).
template <typename T> void channel_sum_cpu(const T* vol, int64_t n_voxels, int nc, const T* w, T* out);
// Molmap envelopes of n_mol structures (csrc/cpu/envelope.cpp): each structure's points
// offsets[m] .. offsets[m + 1] splatted on its own grid (grids[7 m ..]: origin x, y, z,
// spacing, nx, ny, nz, in the structure's frame), clipped at 0; the voxels at or above the
// level enclosing `fraction` of the density, as world coordinates (frames[12 m ..]: the
// 3 x 3 axes, as columns, row-major, then the frame's origin: world = axes l + origin) and
// values. CPU only: set-up work.
template <typename T>
struct EnvelopeArgs {
  const T* points;          // [A, 3] in each structure's frame
  const T* amplitudes;      // [A]
  const int64_t* offsets;   // [n_mol + 1]
  int64_t n_mol;
  const double* grids;      // [n_mol, 7]
  const double* frames;     // [n_mol, 12]
  T sigma, cutoff;
  double fraction;
};
template <typename T>
void envelopes_cpu(const EnvelopeArgs<T>& a, std::vector<std::vector<double>>& coords,
                   std::vector<std::vector<T>>& value);
// Lloyd steps of k-means (unit weights) on n_sets point sets at once (csrc/cpu/kmeans.cpp):
// set m's points offsets[m] .. offsets[m + 1] and centres centre_offsets[m] ..
// centre_offsets[m + 1] (updated in place); labels [A] get each point's centre (within its
// set). Up to `iters` steps, stopping when the labels no longer change; a centre left
// without points moves to the farthest-served point. CPU only: set-up work.
struct KmeansArgs {
  const double* points;           // [A, 3]
  const int64_t* offsets;         // [n_sets + 1]
  double* centres;                // [C, 3]
  const int64_t* centre_offsets;  // [n_sets + 1]
  int64_t n_sets;
  int iters;
  int64_t* labels;                // [A]
};
void kmeans_cpu(const KmeansArgs& a);
// Name of the CPU variant in use ("avx512", "avx2" or "baseline").
const char* cpu_variant();
// For tests only: the CUDA kernels' per-placement code (score_share / stats_share above,
// hence math.h's per-point functions) run serially on the CPU, one placement after another
// (csrc/cpu/pointwise.cpp). The CPU kernels above loop differently and are far faster.
template <typename T> void score_pointwise_cpu(const ScoreArgs<T>& a);
template <typename T> void stats_pointwise_cpu(const StatsArgs<T>& a);

// Explicit float and double instantiations of the three CPU entry points, written in the
// dispatcher's namespace and in each variant's.
#define DIFFFIT_INSTANTIATE_CPU_ENTRY_POINTS                     \
  template void score_cpu<float>(const ScoreArgs<float>&);      \
  template void score_cpu<double>(const ScoreArgs<double>&);    \
  template void stats_cpu<float>(const StatsArgs<float>&);      \
  template void stats_cpu<double>(const StatsArgs<double>&);    \
  template void splat_cpu<float>(const SplatArgs<float>&);      \
  template void splat_cpu<double>(const SplatArgs<double>&);

// The variants themselves (csrc/cpu/kernels_cpu.cpp compiled once per instruction set).
#define DIFFFIT_DECLARE_CPU(NS)                                  \
  namespace NS {                                                 \
  template <typename T> void score_cpu(const ScoreArgs<T>& a);   \
  template <typename T> void stats_cpu(const StatsArgs<T>& a);   \
  template <typename T> void splat_cpu(const SplatArgs<T>& a);   \
  }
DIFFFIT_DECLARE_CPU(base)
#ifdef DIFFFIT_HAVE_AVX2
DIFFFIT_DECLARE_CPU(avx2)
DIFFFIT_DECLARE_CPU(avx512)
#endif
#undef DIFFFIT_DECLARE_CPU

#ifdef DIFFFIT_WITH_CUDA
// `stream` is a cudaStream_t passed as an opaque pointer so this header needs no CUDA.
template <typename T> void score_cuda(const ScoreArgs<T>& a, void* stream);
template <typename T> void stats_cuda(const StatsArgs<T>& a, void* stream);
template <typename T> void splat_cuda(const SplatArgs<T>& a, void* stream);
#endif

}  // namespace difffit
