// CPU backend: OpenMP loops over placements around the shared per-point math of
// difffit/math.h. Sums are accumulated in double whatever the storage type, so float32
// scores over thousands of atoms keep their precision.
#include <cmath>
#include <vector>

#include "difffit/kernels.h"

namespace difffit {

template <typename T>
void score_cpu(const ScoreArgs<T>& a) {
  const int64_t P = a.place.n_place;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t p = 0; p < P; ++p) {
    T u[4], R[9];
    const T qn = quat_to_matrix(a.place.quat + 4 * p, u, R);
    const T* t = a.place.trans + 3 * p;
    const int64_t m = a.place.mol_idx[p];
    const int64_t begin = a.offsets[m], end = a.offsets[m + 1];
    ScoreAcc<double> acc;
    for (int64_t i = begin; i < end; ++i) score_point(a.vol, a.weights, R, t, a.points + 3 * i, acc);
    score_finish(acc, end - begin, u, qn, a.score + p, a.grad_q + 4 * p, a.grad_t + 3 * p);
  }
}

template <typename T>
void stats_cpu(const StatsArgs<T>& a) {
  const int64_t P = a.place.n_place;
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t p = 0; p < P; ++p) {
    T u[4], R[9];
    quat_to_matrix(a.place.quat + 4 * p, u, R);
    const T* t = a.place.trans + 3 * p;
    const int64_t m = a.place.mol_idx[p];
    StatsAcc<double> acc;
    for (int64_t i = a.offsets[m]; i < a.offsets[m + 1]; ++i)
      stats_point(a.vol, a.channel, a.threshold, R, t, a.points + 3 * i, a.point_weights[i], acc);
    for (int k = 0; k < kNumStats; ++k) a.stats[kNumStats * p + k] = T(acc.v[k]);
  }
}

// Splatting scatters into shared voxels. Instead of atomics, each thread owns a slab of z
// planes and visits every atom that reaches into its slab: writes never collide, and the
// result is bitwise reproducible (each voxel sums its atoms in input order).
template <typename T>
void splat_cpu(const SplatArgs<T>& a) {
  const T radius = a.cutoff * a.sigma;
  const T inv2s2 = T(1) / (T(2) * a.sigma * a.sigma);
  const int64_t nx = a.nx, nxy = int64_t(a.nx) * a.ny;
#pragma omp parallel for schedule(static)
  for (int z = 0; z < a.nz; ++z) {
    const T wz = a.oz + z * a.vz;
    for (int64_t i = 0; i < a.n_points; ++i) {
      const T* p = a.points + 3 * i;
      const T dz = wz - p[2];
      if (dz * dz > radius * radius) continue;
      int x_lo, x_hi, y_lo, y_hi;
      splat_range(p[0], a.ox, a.vx, radius, a.nx, x_lo, x_hi);
      splat_range(p[1], a.oy, a.vy, radius, a.ny, y_lo, y_hi);
      const T amp = a.amplitudes[i];
      for (int y = y_lo; y <= y_hi; ++y) {
        const T dy = a.oy + y * a.vy - p[1];
        const T dyz = dy * dy + dz * dz;
        if (dyz > radius * radius) continue;
        T* row = a.grid + z * nxy + y * nx;
        for (int x = x_lo; x <= x_hi; ++x) {
          const T dx = a.ox + x * a.vx - p[0];
          const T r2 = dx * dx + dyz;
          if (r2 <= radius * radius) row[x] += amp * std::exp(-r2 * inv2s2);
        }
      }
    }
  }
}

template void score_cpu<float>(const ScoreArgs<float>&);
template void score_cpu<double>(const ScoreArgs<double>&);
template void stats_cpu<float>(const StatsArgs<float>&);
template void stats_cpu<double>(const StatsArgs<double>&);
template void splat_cpu<float>(const SplatArgs<float>&);
template void splat_cpu<double>(const SplatArgs<double>&);

}  // namespace difffit
