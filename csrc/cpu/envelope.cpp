// Molmap envelopes of many structures at once: each structure's simulated map on its own
// grid (splat_cpu's Gaussians), clipped at 0, and the grid points at or above the level
// that encloses `fraction` of the density (molmap's display contour). The points ChimeraX
// fitmap scores a model with (python/difffit/simulate.py: molmap_envelope is the
// reference, one structure at a time in numpy).
//
// Structures run in parallel, one per thread: a few milliseconds each, so the splat inside
// (an OpenMP loop of its own) runs serially there, and no Python runs between them.
#include <algorithm>
#include <functional>
#include <vector>

#include "difffit/kernels.h"

namespace difffit {

namespace {

// The highest value v such that the values >= v hold `fraction` of the sum of all: the
// first value, in decreasing order, at which the running sum (in double) reaches
// fraction * total. Found by weighted quickselect on the values above 1e-3 of the largest
// (or on all, if those hold less): linear time, where sorting them cost more than the
// splat itself.
template <typename T>
T enclosing_level(const std::vector<T>& g, double fraction) {
  double total = 0;
  T vmax = g.empty() ? T(0) : g[0];
  for (const T v : g) {
    total += v;
    vmax = std::max(vmax, v);
  }
  if (!(total > 0)) return T(0);
  const T floor = T(1e-3) * vmax;
  std::vector<T> top;
  top.reserve(g.size() / 4);
  double top_sum = 0;
  for (const T v : g)
    if (v > floor) {
      top.push_back(v);
      top_sum += v;
    }
  if (top_sum < fraction * total) top = g;
  // Invariant: the answer lies in [lo, hi); the values before lo are all >= those in
  // [lo, hi), and `need` is what [lo, hi) must still supply after them.
  double need = fraction * total;
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

}  // namespace

template <typename T>
void envelopes_cpu(const EnvelopeArgs<T>& a, std::vector<std::vector<double>>& coords,
                   std::vector<std::vector<T>>& value) {
  coords.assign(a.n_mol, {});
  value.assign(a.n_mol, {});
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t m = 0; m < a.n_mol; ++m) {
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
    std::vector<T> grid(size_t(s.nx) * s.ny * s.nz, T(0));
    s.grid = grid.data();
    if (s.n_points > 0) splat_cpu(s);  // nested in this parallel loop: serial
    for (T& v : grid) v = std::max(v, T(0));
    const T level = enclosing_level(grid, a.fraction);
    std::vector<double>& xyz = coords[m];
    std::vector<T>& val = value[m];
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
