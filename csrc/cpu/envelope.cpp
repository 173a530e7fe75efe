// Molmap envelopes of many structures at once: each structure's simulated map on its own
// grid (splat_cpu's Gaussians), clipped at 0, and the grid points at or above the level
// that encloses `fraction` of the density (molmap's display contour). The points ChimeraX
// fitmap scores a model with (python/difffit/simulate.py: molmap_envelope is the
// reference, one structure at a time in numpy).
//
// Structures run in parallel, one per thread: a few milliseconds each, so the splat inside
// (an OpenMP loop of its own) runs serially there, and no Python runs between them.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "difffit/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace difffit {

namespace {

// The value v at which the running sum of the values in decreasing order (in double) first
// reaches `need`, found by weighted quickselect on `top` (reordered): linear time.
template <typename T>
T select_level(std::vector<T>& top, double need) {
  // Invariant: the answer lies in [lo, hi); the values before lo are all >= those in
  // [lo, hi), and `need` is what [lo, hi) must still supply after them.
  auto lo = top.begin(), hi = top.end();
  while (hi - lo > 32) {
    const auto mid = lo + (hi - lo) / 2;
    std::nth_element(lo, mid, hi, std::greater<T>());
    double above = 0;
    for (auto it = lo; it != mid; ++it) above += *it;
    if (above >= need) {
      hi = mid;
    } else if (above + *mid >= need) {
      return *mid;
    } else {
      need -= above + *mid;
      lo = mid + 1;
    }
  }
  std::sort(lo, hi, std::greater<T>());
  double cum = 0;
  for (auto it = lo; it != hi; ++it) {
    cum += *it;
    if (cum >= need) return *it;
  }
  return lo == hi ? *(lo - 1) : *(hi - 1);
}

// Order-preserving buckets of non-negative values: the top bits of their representation
// (exponent and 8 mantissa bits: 256 buckets per power of two).
inline uint64_t bucket_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u >> 15;
}
inline uint64_t bucket_of(double v) {
  uint64_t u;
  std::memcpy(&u, &v, sizeof u);
  return u >> 44;
}

// The highest value v such that the values >= v hold `fraction` of the sum of all (g >= 0):
// the first value, in decreasing order, at which the running sum (in double) reaches
// fraction * total. The values above 1e-3 of the largest go into a few thousand
// order-preserving buckets (one pass); the buckets from the top find the one where the
// sum is reached, and only its values are sorted. Sorting all, or even a quickselect over
// all, cost more than the splat itself. When the values above 1e-3 of the largest hold
// less than the fraction (a near-uniform grid), a quickselect over all of them decides.
template <typename T>
T enclosing_level(const std::vector<T>& g, double fraction) {
  double total = 0;
  T vmax = g.empty() ? T(0) : g[0];
  for (const T v : g) {
    total += v;
    vmax = std::max(vmax, v);
  }
  if (!(total > 0)) return T(0);
  const double need = fraction * total;
  const T floor = T(1e-3) * vmax;
  const uint64_t b0 = bucket_of(floor), nb = bucket_of(vmax) - b0 + 1;
  std::vector<double> sum(nb, 0.0);
  double above = 0;
  for (const T v : g)
    if (v > floor) {
      sum[bucket_of(v) - b0] += v;
      above += v;
    }
  if (above < need) {
    std::vector<T> all = g;
    return select_level(all, need);
  }
  // The bucket where the running sum from the top reaches `need`, and what it must supply.
  double cum = 0;
  uint64_t b = nb;
  while (b > 0) {
    --b;
    if (cum + sum[b] >= need) break;
    cum += sum[b];
  }
  std::vector<T> in;
  for (const T v : g)
    if (v > floor && bucket_of(v) - b0 == b) in.push_back(v);
  if (in.empty()) return floor;  // unreachable: sum[b] > 0 needs a value in bucket b
  std::sort(in.begin(), in.end(), std::greater<T>());
  for (const T v : in) {
    cum += v;
    if (cum >= need) return v;
  }
  return in.back();  // the bucket sums' rounding ran past this bucket's values
}

}  // namespace

template <typename T>
void envelopes_cpu(const EnvelopeArgs<T>& a, std::vector<std::vector<double>>& coords,
                   std::vector<std::vector<T>>& value) {
  coords.assign(a.n_mol, {});
  value.assign(a.n_mol, {});
  // One grid buffer per thread, reused from structure to structure: a fresh one per
  // structure (hundreds of KB) cost page faults on every first touch.
  int n_threads = 1;
#ifdef _OPENMP
  n_threads = omp_get_max_threads();
#endif
  std::vector<std::vector<T>> buffers(n_threads);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t m = 0; m < a.n_mol; ++m) {
    int thread = 0;
#ifdef _OPENMP
    thread = omp_get_thread_num();
#endif
    const double* gp = a.grids + 7 * m;  // origin x, y, z, spacing, nx, ny, nz
    const double* fr = a.frames + 12 * m;  // frame origin, then axes (columns) row-major
    SplatArgs<T> s;
    s.points = a.points + 3 * a.offsets[m];
    s.amplitudes = a.amplitudes + a.offsets[m];
    s.n_points = a.offsets[m + 1] - a.offsets[m];
    s.sigma = a.sigma;
    s.cutoff = a.cutoff;
    s.ox = T(gp[0]); s.oy = T(gp[1]); s.oz = T(gp[2]);
    s.vx = s.vy = s.vz = T(gp[3]);
    s.nx = int(gp[4]); s.ny = int(gp[5]); s.nz = int(gp[6]);
    std::vector<T>& grid = buffers[thread];
    grid.assign(size_t(s.nx) * s.ny * s.nz, T(0));
    s.grid = grid.data();
    if (s.n_points > 0) splat_cpu(s);  // nested in this parallel loop: serial
    for (T& v : grid) v = std::max(v, T(0));
    const T level = enclosing_level(grid, a.fraction);
    std::vector<double>& xyz = coords[m];
    std::vector<T>& val = value[m];
    const size_t kept = size_t(std::count_if(grid.begin(), grid.end(), [&](T v) { return v >= level; }));
    xyz.reserve(3 * kept);
    val.reserve(kept);
    size_t i = 0;
    for (int z = 0; z < s.nz; ++z)
      for (int y = 0; y < s.ny; ++y)
        for (int x = 0; x < s.nx; ++x, ++i) {
          if (!(grid[i] >= level)) continue;
          // The grid point in the grid's frame, then in the world's.
          const double l[3] = {gp[0] + x * gp[3], gp[1] + y * gp[3], gp[2] + z * gp[3]};
          for (int d = 0; d < 3; ++d)
            xyz.push_back(fr[3 * d] * l[0] + fr[3 * d + 1] * l[1] + fr[3 * d + 2] * l[2] + fr[9 + d]);
          val.push_back(grid[i]);
        }
  }
}

template void envelopes_cpu<float>(const EnvelopeArgs<float>&, std::vector<std::vector<double>>&,
                                   std::vector<std::vector<float>>&);
template void envelopes_cpu<double>(const EnvelopeArgs<double>&, std::vector<std::vector<double>>&,
                                    std::vector<std::vector<double>>&);

}  // namespace difffit
