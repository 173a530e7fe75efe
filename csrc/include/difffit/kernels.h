// Arguments and entry points of difffit's kernels. The CPU versions live in
// csrc/cpu/kernels_cpu.cpp, the CUDA versions in csrc/cuda/kernels.cu; both take the same
// argument structs, hold raw pointers only, and allocate nothing: the caller (Python, via
// csrc/bindings.cpp) allocates every output and checks shapes, dtypes and devices.
#pragma once

#include <cstdint>

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

template <typename T>
struct ScoreArgs {
  VolumeView<T> vol;
  const T* weights;         // [nc] channel (pyramid level) weights
  const T* points;          // [A, 3] centred atom coordinates of all molecules
  const int64_t* offsets;   // [M + 1]
  int64_t n_mol;
  Placements<T> place;
  T* score;                 // [P] mean weighted density over the molecule's points
  T* grad_q;                // [P, 4] d score / d quat
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

// CPU entry points; they dispatch at run time to the fastest compiled variant.
template <typename T> void score_cpu(const ScoreArgs<T>& a);
template <typename T> void stats_cpu(const StatsArgs<T>& a);
template <typename T> void splat_cpu(const SplatArgs<T>& a);
// out[i] = sum_c w[c] * vol[i * nc + c] for the n_voxels voxels of a volume (OpenMP).
template <typename T> void channel_sum_cpu(const T* vol, int64_t n_voxels, int nc, const T* w, T* out);
// Name of the CPU variant in use ("avx512", "avx2" or "baseline").
const char* cpu_variant();

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
