// Shared math of difffit's kernels: one copy, compiled for the CPU (csrc/cpu) and the GPU
// (csrc/cuda). The backends loop differently:
//  * The CUDA kernels run the per-point functions below (score_point, stats_point and the
//    samplers sample_weighted_grad / sample_channel under them) once per thread and point.
//  * The CPU kernels process blocks of points (csrc/cpu/kernels_cpu.cpp) with math.h's
//    quat_to_matrix, move_point, axis_lookup, corner_offsets, trilinear_corners /
//    trilinear_value and score_finish, but not the per-point functions; the float32
//    one-channel vector kernel (csrc/cpu/score_avx2.h) has its own vector forms of
//    move_point and axis_lookup.
//  * Splatting: both use splat_range, splat_delta and SplatGaussian.
// So that CPU-only test runs also check the per-point functions, score_pointwise_cpu and
// stats_pointwise_cpu (csrc/cpu/pointwise.cpp) run the CUDA kernels' per-placement code
// (score_share / stats_share in kernels.h) serially on the CPU; tests/test_ops.py compares
// them with the reference. Only a GPU test run checks the CUDA kernels' own loops and
// reductions (teams of warps, shuffles, the splat box walk, atomics) and nvcc's code.
//
// Conventions (see README "Conventions"):
//  * World coordinates in Angstrom, (x, y, z).
//  * A volume is stored voxel-major: data[((z * ny + y) * nx + x) * nc + c], i.e. z slowest,
//    x fastest among the spatial axes, and all channels (pyramid levels) of one voxel
//    contiguous, so one trilinear corner is one short contiguous read.
//  * Voxel centres lie on integer indices: the sample at world point p reads the fractional
//    index u = (p - origin) / voxel_size (grid_sample's align_corners=True meaning).
//  * Outside the grid a sample takes the value at the nearest border voxel (the index is
//    clamped), so its spatial gradient along a clamped axis is zero.
//  * A quaternion is (w, x, y, z) and need not be normalised: the rotation is R(q / |q|),
//    and gradients are taken through the normalisation.
//  * A placement (q, t) moves a centred atom x to R(q) x + t.
#pragma once

#include <cmath>
#include <cstdint>

// Always inlined, on the host too. An out-of-line copy would be a weak symbol that the
// linker keeps once for all the CPU builds (baseline, AVX2, AVX-512: csrc/cpu/dispatch.cpp),
// so one build would run another's code; and which a * b + c GCC contracts to FMA in the
// AVX2 / AVX-512 builds would depend on its inlining heuristics, i.e. on unrelated edits.
#if defined(__CUDACC__)
#define DF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define DF_HD inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define DF_HD __forceinline
#else
#define DF_HD inline
#endif

namespace difffit {

// Number of per-placement statistics written by the point-statistics kernel.
constexpr int kNumStats = 6;
// Most channels (pyramid levels) a volume may have.
constexpr int kMaxChannels = 64;
// Their order: sum w, sum w^2, sum d, sum d^2, sum w*d, count(d > threshold), where w is a
// point's weight and d the sampled density at the moved point.

template <typename T>
struct VolumeView {
  const T* data;    // [nz, ny, nx, nc]
  int nx, ny, nz, nc;
  T ox, oy, oz;     // world position of voxel (0, 0, 0)
  T ivx, ivy, ivz;  // 1 / voxel size per axis
};

// ---------------------------------------------------------------------------------------
// Quaternions

// Rotation matrix (row-major R[3 * row + col]) of the normalised quaternion q / |q|.
// Writes the normalised quaternion to u and returns |q|.
template <typename T>
DF_HD T quat_to_matrix(const T* q, T* u, T* R) {
  const T n = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  const T inv = T(1) / n;
  const T w = q[0] * inv, x = q[1] * inv, y = q[2] * inv, z = q[3] * inv;
  u[0] = w; u[1] = x; u[2] = y; u[3] = z;
  R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z);     R[2] = 2 * (x * z + w * y);
  R[3] = 2 * (x * y + w * z);     R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
  R[6] = 2 * (x * z - w * y);     R[7] = 2 * (y * z + w * x);     R[8] = 1 - 2 * (x * x + y * y);
  return n;
}

// Vector-Jacobian product of q -> R(q / |q|): given G = dL/dR (row-major), writes dL/dq.
// First dL/du for the unit quaternion u (the derivative of each entry of R above), then the
// projection through u = q / |q|: dL/dq = (dL/du - u (u . dL/du)) / |q|.
template <typename T>
DF_HD void quat_matrix_vjp(const T* u, T n, const T* G, T* gq) {
  const T w = u[0], x = u[1], y = u[2], z = u[3];
  const T gw = 2 * (-z * G[1] + y * G[2] + z * G[3] - x * G[5] - y * G[6] + x * G[7]);
  const T gx = 2 * (y * G[1] + z * G[2] + y * G[3] - 2 * x * G[4] - w * G[5] + z * G[6] +
                    w * G[7] - 2 * x * G[8]);
  const T gy = 2 * (-2 * y * G[0] + x * G[1] + w * G[2] + x * G[3] + z * G[5] - w * G[6] +
                    z * G[7] - 2 * y * G[8]);
  const T gz = 2 * (-2 * z * G[0] - w * G[1] + x * G[2] + w * G[3] - 2 * z * G[4] + y * G[5] +
                    x * G[6] + y * G[7]);
  const T dot = w * gw + x * gx + y * gy + z * gz;
  const T inv = T(1) / n;
  gq[0] = (gw - w * dot) * inv;
  gq[1] = (gx - x * dot) * inv;
  gq[2] = (gy - y * dot) * inv;
  gq[3] = (gz - z * dot) * inv;
}

// A point in world coordinates.
template <typename T>
struct Point {
  T x, y, z;
};

// The placement (R, t) applied to centred point x: p = R x + t (R row-major), summed in
// this order by every backend that moves points one at a time. Returned by value, not
// through references: GCC then vectorises the CPU's loops over points as fully.
template <typename T>
DF_HD Point<T> move_point(const T* R, const T* t, const T* x) {
  return {R[0] * x[0] + R[1] * x[1] + R[2] * x[2] + t[0],
          R[3] * x[0] + R[4] * x[1] + R[5] * x[2] + t[1],
          R[6] * x[0] + R[7] * x[1] + R[8] * x[2] + t[2]};
}

// ---------------------------------------------------------------------------------------
// Trilinear interpolation

// One axis of a trilinear lookup: the lower corner index i0, the upper i1 (i0 + 1, or i0
// for a one-voxel axis), the fraction t in [0, 1], and whether the point lies inside the
// grid along this axis (a clamped coordinate has zero derivative).
template <typename T>
DF_HD void axis_lookup(T u, int n, int& i0, int& i1, T& t, bool& inside) {
  // Branch-free (selects, no jumps) so that CPU loops over atoms vectorise. A one-voxel
  // axis gives i0 == i1 == 0 and t == 0; u == n - 1 interpolates the last cell with t == 1.
  inside = (u >= T(0)) & (u <= T(n - 1));
  T uc = u < T(0) ? T(0) : u;
  uc = uc > T(n - 1) ? T(n - 1) : uc;
  const int last_cell = n > 1 ? n - 2 : 0;
  int i = static_cast<int>(uc);  // uc >= 0, so truncation is floor
  i = i < last_cell ? i : last_cell;
  i0 = i;
  i1 = i + 1 < n ? i + 1 : n - 1;
  t = uc - T(i);
}

// Offsets of the 8 corners c[x + 2 y + 4 z] of a trilinear cell from its lower corner,
// given the offsets dx, dy, dz of its x + 1, y + 1 and z + 1 neighbours (0 along a
// one-voxel axis, whose two corners are the same voxel). Any unit: voxels or values.
template <typename I>
DF_HD void corner_offsets(I dx, I dy, I dz, I* o) {
  o[0] = 0;  o[1] = dx;      o[2] = dy;      o[3] = dx + dy;
  o[4] = dz; o[5] = dx + dz; o[6] = dy + dz; o[7] = dx + dy + dz;
}

// Where world point p falls in the grid of v: the voxel index of the lower corner of its
// cell and the offsets of the cell's 8 corners c[x + 2 y + 4 z] from it, the fractions along
// x, y, z, and whether p lies inside the grid along each axis. (32-bit offsets: the bindings
// reject volumes of 2^31 values or more.)
template <typename T>
struct Cell {
  int64_t base;
  int offset[8];
  T t[3];
  bool inside[3];
};

template <typename T>
DF_HD void locate_cell(const VolumeView<T>& v, T px, T py, T pz, Cell<T>& cell) {
  int x0, x1, y0, y1, z0, z1;
  axis_lookup((px - v.ox) * v.ivx, v.nx, x0, x1, cell.t[0], cell.inside[0]);
  axis_lookup((py - v.oy) * v.ivy, v.ny, y0, y1, cell.t[1], cell.inside[1]);
  axis_lookup((pz - v.oz) * v.ivz, v.nz, z0, z1, cell.t[2], cell.inside[2]);
  const int nxy = v.nx * v.ny;
  cell.base = int64_t(z0) * nxy + int64_t(y0) * v.nx + x0;
  corner_offsets(x1 - x0, (y1 - y0) * v.nx, (z1 - z0) * nxy, cell.offset);
}

// Channel-weighted value of one voxel: sum_c w[c] * V[voxel, c].
template <typename T>
DF_HD T weighted_voxel(const VolumeView<T>& v, const T* w, int64_t voxel) {
  const T* p = v.data + voxel * v.nc;
  T s = T(0);
  for (int c = 0; c < v.nc; ++c) s += w[c] * p[c];
  return s;
}

// Trilinear interpolation of the 8 corner values c[x + 2 y + 4 z] at fractions (tx, ty, tz),
// with the derivatives of the interpolant with respect to each fraction.
template <typename T>
DF_HD T trilinear_corners(const T* c, T tx, T ty, T tz, T& dtx, T& dty, T& dtz) {
  // Interpolate along x, then y, then z; keep the pieces the derivatives need.
  const T c00 = c[0] + tx * (c[1] - c[0]), c10 = c[2] + tx * (c[3] - c[2]);
  const T c01 = c[4] + tx * (c[5] - c[4]), c11 = c[6] + tx * (c[7] - c[6]);
  const T c0 = c00 + ty * (c10 - c00), c1 = c01 + ty * (c11 - c01);
  const T dx0 = (c[1] - c[0]) + ty * ((c[3] - c[2]) - (c[1] - c[0]));
  const T dx1 = (c[5] - c[4]) + ty * ((c[7] - c[6]) - (c[5] - c[4]));
  dtx = dx0 + tz * (dx1 - dx0);
  dty = (c10 - c00) + tz * ((c11 - c01) - (c10 - c00));
  dtz = c1 - c0;
  return c0 + tz * (c1 - c0);
}

// Weighted multi-channel trilinear sample at world point p, with its spatial gradient
// (world units, i.e. per Angstrom). Returns the value, writes the gradient to g.
template <typename T>
DF_HD T sample_weighted_grad(const VolumeView<T>& v, const T* w, T px, T py, T pz, T* g) {
  Cell<T> cell;
  locate_cell(v, px, py, pz, cell);
  // Written out, not as a loop: nvcc then keeps the float32 score kernel within 64
  // registers without spilling.
  const int64_t b = cell.base;
  const int* o = cell.offset;
  const T c[8] = {weighted_voxel(v, w, b + o[0]), weighted_voxel(v, w, b + o[1]),
                  weighted_voxel(v, w, b + o[2]), weighted_voxel(v, w, b + o[3]),
                  weighted_voxel(v, w, b + o[4]), weighted_voxel(v, w, b + o[5]),
                  weighted_voxel(v, w, b + o[6]), weighted_voxel(v, w, b + o[7])};
  T dtx, dty, dtz;
  const T val = trilinear_corners(c, cell.t[0], cell.t[1], cell.t[2], dtx, dty, dtz);
  g[0] = cell.inside[0] ? dtx * v.ivx : T(0);
  g[1] = cell.inside[1] ? dty * v.ivy : T(0);
  g[2] = cell.inside[2] ? dtz * v.ivz : T(0);
  return val;
}

// Trilinear interpolation of the 8 corner values c[x + 2 y + 4 z] (value only; the same
// formula as trilinear_corners).
template <typename T>
DF_HD T trilinear_value(const T* c, T tx, T ty, T tz) {
  const T c00 = c[0] + tx * (c[1] - c[0]), c10 = c[2] + tx * (c[3] - c[2]);
  const T c01 = c[4] + tx * (c[5] - c[4]), c11 = c[6] + tx * (c[7] - c[6]);
  const T c0 = c00 + ty * (c10 - c00), c1 = c01 + ty * (c11 - c01);
  return c0 + tz * (c1 - c0);
}

// Trilinear sample of one channel at world point p (value only).
template <typename T>
DF_HD T sample_channel(const VolumeView<T>& v, int channel, T px, T py, T pz) {
  Cell<T> cell;
  locate_cell(v, px, py, pz, cell);
  const T* d = v.data + channel;
  T c[8];
  for (int j = 0; j < 8; ++j) c[j] = d[(cell.base + cell.offset[j]) * v.nc];
  return trilinear_value(c, cell.t[0], cell.t[1], cell.t[2]);
}

// ---------------------------------------------------------------------------------------
// Per-point work, accumulated per placement by the backends.

// Score accumulator of one placement: sum of sampled values, of spatial gradients g_i, and
// of the outer products g_i x_i^T (dL/dR before the 1/N and the chain through q).
template <typename A>
struct ScoreAcc {
  A s = A(0);
  A g[3] = {A(0), A(0), A(0)};
  A G[9] = {A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0), A(0)};
  DF_HD void add(const ScoreAcc& o) {
    s += o.s;
    for (int k = 0; k < 3; ++k) g[k] += o.g[k];
    for (int k = 0; k < 9; ++k) G[k] += o.G[k];
  }
};

// Moves centred point x by (R, t), samples, and accumulates into acc.
template <typename T, typename A>
DF_HD void score_point(const VolumeView<T>& v, const T* w, const T* R, const T* t, const T* x,
                       ScoreAcc<A>& acc) {
  const Point<T> p = move_point(R, t, x);
  T g[3];
  const T val = sample_weighted_grad(v, w, p.x, p.y, p.z, g);
  acc.s += val;
  for (int a = 0; a < 3; ++a) {
    acc.g[a] += g[a];
    for (int b = 0; b < 3; ++b) acc.G[3 * a + b] += A(g[a]) * A(x[b]);
  }
}

// Turns the sums of one placement with n points into the mean score and its gradients
// with respect to the (unnormalised) quaternion q and the translation.
template <typename T, typename A>
DF_HD void score_finish(const ScoreAcc<A>& acc, int64_t n, const T* u, T qnorm, T* score,
                        T* grad_q, T* grad_t) {
  const A inv = A(1) / A(n);
  *score = T(acc.s * inv);
  T G[9];
  for (int k = 0; k < 3; ++k) grad_t[k] = T(acc.g[k] * inv);
  for (int k = 0; k < 9; ++k) G[k] = T(acc.G[k] * inv);
  quat_matrix_vjp(u, qnorm, G, grad_q);
}

// Point statistics for fit metrics: sampled density d at the moved point, weight w.
template <typename A>
struct StatsAcc {
  A v[kNumStats] = {A(0), A(0), A(0), A(0), A(0), A(0)};
  DF_HD void add(const StatsAcc& o) {
    for (int k = 0; k < kNumStats; ++k) v[k] += o.v[k];
  }
};

template <typename T, typename A>
DF_HD void stats_point(const VolumeView<T>& v, int channel, T threshold, const T* R, const T* t,
                       const T* x, T weight, StatsAcc<A>& acc) {
  const Point<T> p = move_point(R, t, x);
  const A d = A(sample_channel(v, channel, p.x, p.y, p.z));
  const A wt = A(weight);
  acc.v[0] += wt;
  acc.v[1] += wt * wt;
  acc.v[2] += d;
  acc.v[3] += d * d;
  acc.v[4] += wt * d;
  acc.v[5] += d > A(threshold) ? A(1) : A(0);
}

// ---------------------------------------------------------------------------------------
// Gaussian splatting

// An atom of amplitude amp adds amp * exp(-r^2 / (2 sigma^2)) to every voxel within
// r <= radius = cutoff * sigma of it. The Gaussian factorises by axis, so a voxel's value is
// value(amp, factor(dz), factor(dy), factor(dx)): the CPU computes each atom's factors once
// per axis (a few dozen exps per atom instead of one per voxel). Both backends measure
// r^2 = dx^2 + (dy^2 + dz^2) with d = splat_delta(...) along each axis, decide inclusion
// with inside() and weigh with value(), so they include the same voxels and compute the
// same values.
template <typename T>
struct SplatGaussian {
  T radius, r2max, inv2s2;
  DF_HD SplatGaussian(T sigma, T cutoff)
      : radius(cutoff * sigma), r2max(radius * radius), inv2s2(T(1) / (T(2) * sigma * sigma)) {}
  DF_HD bool inside(T r2) const { return r2 <= r2max; }
  // exp(-d^2 / (2 sigma^2)) along one axis (expf for float, on the host and on the GPU).
  DF_HD T factor(T d) const { return std::exp(-(d * d) * inv2s2); }
  DF_HD T value(T amp, T fz, T fy, T fx) const { return amp * fz * fy * fx; }
};

// Offset along one axis from the atom coordinate p to voxel i of a grid with this origin and
// voxel size.
template <typename T>
DF_HD T splat_delta(T origin, int i, T voxel, T p) {
  return origin + i * voxel - p;
}

// The index box [lo, hi] of voxels within `radius` of world point p along one axis (empty
// when lo > hi).
template <typename T>
DF_HD void splat_range(T p, T origin, T voxel, T radius, int n, int& lo, int& hi) {
  const T a = (p - radius - origin) / voxel, b = (p + radius - origin) / voxel;
  lo = static_cast<int>(ceil(a));
  hi = static_cast<int>(floor(b));
  if (lo < 0) lo = 0;
  if (hi > n - 1) hi = n - 1;
}

}  // namespace difffit
