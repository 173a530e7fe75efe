// CUDA backend: the per-point math of difffit/math.h, each thread's share of a placement
// as in kernels.h (score_share / stats_share), looped and reduced the GPU way.
//
// Score and point statistics: a "team" of TEAM warps (TEAM in {1, 2, 4, 8}) handles one
// placement; a block of 256 threads (8 warps) handles 8 / TEAM placements. The team's
// threads stride over the molecule's atoms and accumulate the per-placement sums in T
// registers; the sums are reduced by a warp-shuffle tree, then (TEAM > 1) across the team's
// warps through shared memory, and the first lane of the team writes the outputs (no
// atomics, so the outputs are deterministic for a given launch configuration). TEAM is
// picked on the host from the number of placements so that about one GPU's worth of
// resident warps exists: 1000 placements get 8 warps each, 100k placements one warp each.
// Every thread computes the rotation of its placement itself (a few flops; the quaternion
// loads are warp-uniform and served as broadcasts).
//
// Splatting: one warp per atom; the lanes walk the atom's voxel box (flattened, x fastest,
// so the atomicAdds of a warp hit neighbouring addresses) and atomically add into the grid.
// The inclusion rule and the arithmetic are the CPU's: boxes along x and y from
// splat_range, r2 = dx^2 + (dy^2 + dz^2) with d = splat_delta(...), and SplatGaussian
// (math.h; here each lane computes its voxel's three axis factors, the CPU tabulates
// them per atom). The CPU walks every z plane and keeps those with dz^2 <= radius^2; here
// the z range comes from splat_range widened by one plane each side (a plane outside that range
// is more than radius away whatever the rounding), and r2 <= radius^2 implies the CPU's
// dz^2 and dy^2 + dz^2 tests because adding non-negative floats never decreases a sum.
//
// Compiled without --use_fast_math and with --fmad=false (CMakeLists.txt), so each point's
// arithmetic rounds exactly as in the CPU's baseline build and in its per-point test path
// (csrc/cpu/pointwise.cpp), which have no FMA instructions to contract to: their results
// differ from these only by the order of the final sums (and, in splatting, the last bit
// of exp). The AVX2 / AVX-512 CPU builds let GCC contract a * b + c to FMA, so they can
// differ in the last bits as well. These kernels are bound by the scattered volume reads,
// not by arithmetic, so fast-math or FMA contraction would buy little.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "difffit/kernels.h"

namespace difffit {
namespace {

constexpr int kWarp = 32;
constexpr int kBlock = 256;                // threads per block
constexpr int kWarps = kBlock / kWarp;     // warps per block
constexpr int kScoreN = 13;                // s, g[3], G[9]

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("difffit: CUDA ") + what + " kernel failed to launch: " +
                             cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("difffit: ") + what + ": " + cudaGetErrorName(e) +
                             ": " + cudaGetErrorString(e));
}

// Multiprocessor count of the current device, cached per device.
int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  if (dev >= 0 && dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev),
        "cudaDeviceGetAttribute(MultiProcessorCount)");
  if (n <= 0) n = 1;
  if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// Warps per placement: the fewest that give about 64 resident warps per multiprocessor
// (a full Ampere/Hopper SM), at most a whole block.
int choose_team(int64_t n_place) {
  const int64_t target = int64_t(sm_count()) * 64;
  for (int team = 1; team < kWarps; team *= 2)
    if (n_place * team >= target) return team;
  return kWarps;
}

dim3 grid_for(int64_t n_items, int per_block, const char* what) {
  const int64_t blocks = (n_items + per_block - 1) / per_block;
  if (blocks > int64_t(0x7fffffff))
    throw std::runtime_error(std::string("difffit: too many items for one CUDA ") + what +
                             " launch");
  return dim3(static_cast<unsigned>(blocks));
}

// Sums v[0..N) over the team: a shuffle tree within each warp, then the team's warp sums
// in order through shared memory. The result is valid in lane 0 of the team's first warp.
// Every thread of the block must call it (it may synchronise the block).
template <typename T, int N, int TEAM>
__device__ __forceinline__ void team_reduce(T* v, T (*part)[N]) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) {
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);
  }
  if (TEAM > 1) {
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) part[warp][k] = v[k];
    }
    __syncthreads();
    if (lane == 0 && warp % TEAM == 0) {
#pragma unroll
      for (int j = 1; j < TEAM; ++j) {
#pragma unroll
        for (int k = 0; k < N; ++k) v[k] += part[warp + j][k];
      }
    }
  }
}

// Copies the channel weights to shared memory w[kMaxChannels] (the bindings reject more
// channels; should more ever arrive, the global array is read instead). Every thread of the
// block must call it.
template <typename T>
__device__ __forceinline__ const T* stage_weights(const T* weights, int nc, T* w) {
  if (nc > kMaxChannels) return weights;
  for (int c = threadIdx.x; c < nc; c += blockDim.x) w[c] = weights[c];
  __syncthreads();
  return w;
}

template <typename T, int TEAM>
__global__ void __launch_bounds__(kBlock) score_kernel(const ScoreArgs<T> a) {
  __shared__ T part[kWarps][kScoreN];
  __shared__ T shared_w[kMaxChannels];
  const T* w = stage_weights(a.weights, a.vol.nc, shared_w);

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t p = int64_t(blockIdx.x) * (kWarps / TEAM) + warp / TEAM;
  const int rank = (warp % TEAM) * kWarp + lane;  // thread's index within its team
  const bool active = p < a.place.n_place;

  ScoreAcc<T> acc;
  int64_t n = 0;
  if (active) n = score_share(a, w, p, rank, TEAM * kWarp, acc);

  T v[kScoreN];
  v[0] = acc.s;
#pragma unroll
  for (int k = 0; k < 3; ++k) v[1 + k] = acc.g[k];
#pragma unroll
  for (int k = 0; k < 9; ++k) v[4 + k] = acc.G[k];
  team_reduce<T, kScoreN, TEAM>(v, part);

  if (active && rank == 0) {
    ScoreAcc<T> tot;
    tot.s = v[0];
#pragma unroll
    for (int k = 0; k < 3; ++k) tot.g[k] = v[1 + k];
#pragma unroll
    for (int k = 0; k < 9; ++k) tot.G[k] = v[4 + k];
    // score_write computes the normalised quaternion again (cheaper than keeping it live
    // through the loop).
    score_write(a, p, tot, n);
  }
}

template <typename T, int TEAM>
__global__ void __launch_bounds__(kBlock) stats_kernel(const StatsArgs<T> a) {
  __shared__ T part[kWarps][kNumStats];

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t p = int64_t(blockIdx.x) * (kWarps / TEAM) + warp / TEAM;
  const int rank = (warp % TEAM) * kWarp + lane;
  const bool active = p < a.place.n_place;

  StatsAcc<T> acc;
  if (active) stats_share(a, p, rank, TEAM * kWarp, acc);

  T v[kNumStats];
#pragma unroll
  for (int k = 0; k < kNumStats; ++k) v[k] = acc.v[k];
  team_reduce<T, kNumStats, TEAM>(v, part);

  if (active && rank == 0) {
#pragma unroll
    for (int k = 0; k < kNumStats; ++k) a.stats[kNumStats * p + k] = v[k];
  }
}

template <typename T>
__global__ void __launch_bounds__(kBlock) splat_kernel(const SplatArgs<T> a) {
  const int64_t i = int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (i >= a.n_points) return;  // warp-uniform; this kernel never synchronises

  const SplatGaussian<T> gauss(a.sigma, a.cutoff);
  const T px = a.points[3 * i], py = a.points[3 * i + 1], pz = a.points[3 * i + 2];

  int x_lo, x_hi, y_lo, y_hi, z_lo, z_hi;
  splat_range(px, a.ox, a.vx, gauss.radius, a.nx, x_lo, x_hi);
  splat_range(py, a.oy, a.vy, gauss.radius, a.ny, y_lo, y_hi);
  splat_range(pz, a.oz, a.vz, gauss.radius, a.nz, z_lo, z_hi);
  // Widen z by one plane each side: the r2 test below decides, as the CPU's dz test does.
  z_lo = z_lo - 1 < 0 ? 0 : z_lo - 1;
  z_hi = z_hi + 1 > a.nz - 1 ? a.nz - 1 : z_hi + 1;
  if (x_lo > x_hi || y_lo > y_hi || z_lo > z_hi) return;

  const int64_t bx = x_hi - x_lo + 1, by = y_hi - y_lo + 1, bz = z_hi - z_lo + 1;
  const int64_t total = bx * by * bz;
  const int64_t nx = a.nx, nxy = int64_t(a.nx) * a.ny;
  const T amp = a.amplitudes[i];
  for (int64_t k = lane; k < total; k += kWarp) {
    const int x = x_lo + static_cast<int>(k % bx);
    const int64_t row = k / bx;
    const int y = y_lo + static_cast<int>(row % by);
    const int z = z_lo + static_cast<int>(row / by);
    // The same expressions, in the same order, as splat_cpu.
    const T dz = splat_delta(a.oz, z, a.vz, pz);
    const T dy = splat_delta(a.oy, y, a.vy, py);
    const T dyz = dy * dy + dz * dz;
    const T dx = splat_delta(a.ox, x, a.vx, px);
    if (gauss.inside(dx * dx + dyz))
      atomicAdd(a.grid + (z * nxy + y * nx + x),
                gauss.value(amp, gauss.factor(dz), gauss.factor(dy), gauss.factor(dx)));
  }
}

}  // namespace

template <typename T>
void score_cuda(const ScoreArgs<T>& a, void* stream) {
  const int64_t P = a.place.n_place;
  if (P <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int team = choose_team(P);
  const dim3 grid = grid_for(P, kWarps / team, "score");
  switch (team) {
    case 1: score_kernel<T, 1><<<grid, kBlock, 0, s>>>(a); break;
    case 2: score_kernel<T, 2><<<grid, kBlock, 0, s>>>(a); break;
    case 4: score_kernel<T, 4><<<grid, kBlock, 0, s>>>(a); break;
    default: score_kernel<T, 8><<<grid, kBlock, 0, s>>>(a); break;
  }
  check_launch("score");
}

template <typename T>
void stats_cuda(const StatsArgs<T>& a, void* stream) {
  const int64_t P = a.place.n_place;
  if (P <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int team = choose_team(P);
  const dim3 grid = grid_for(P, kWarps / team, "point-statistics");
  switch (team) {
    case 1: stats_kernel<T, 1><<<grid, kBlock, 0, s>>>(a); break;
    case 2: stats_kernel<T, 2><<<grid, kBlock, 0, s>>>(a); break;
    case 4: stats_kernel<T, 4><<<grid, kBlock, 0, s>>>(a); break;
    default: stats_kernel<T, 8><<<grid, kBlock, 0, s>>>(a); break;
  }
  check_launch("point-statistics");
}

template <typename T>
void splat_cuda(const SplatArgs<T>& a, void* stream) {
  if (a.n_points <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const dim3 grid = grid_for(a.n_points, kWarps, "splat");
  splat_kernel<T><<<grid, kBlock, 0, s>>>(a);
  check_launch("splat");
}

template void score_cuda<float>(const ScoreArgs<float>&, void*);
template void score_cuda<double>(const ScoreArgs<double>&, void*);
template void stats_cuda<float>(const StatsArgs<float>&, void*);
template void stats_cuda<double>(const StatsArgs<double>&, void*);
template void splat_cuda<float>(const SplatArgs<float>&, void*);
template void splat_cuda<double>(const SplatArgs<double>&, void*);

}  // namespace difffit
