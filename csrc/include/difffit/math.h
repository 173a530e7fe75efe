// Shared math of difffit's kernels: one copy, compiled for the CPU (OpenMP loops in
// csrc/cpu) and the GPU (CUDA kernels in csrc/cuda). Both backends differ only in how
// they loop and reduce, so the CPU tests cover the arithmetic the GPU runs.
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

#if defined(__CUDACC__)
#define DF_HD __host__ __device__ __forceinline__
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
  int x0, x1, y0, y1, z0, z1;
  T tx, ty, tz;
  bool inx, iny, inz;
  axis_lookup((px - v.ox) * v.ivx, v.nx, x0, x1, tx, inx);
  axis_lookup((py - v.oy) * v.ivy, v.ny, y0, y1, ty, iny);
  axis_lookup((pz - v.oz) * v.ivz, v.nz, z0, z1, tz, inz);
  const int64_t nx = v.nx, nxy = int64_t(v.nx) * v.ny;
  const int64_t r00 = z0 * nxy + y0 * nx, r10 = z0 * nxy + y1 * nx;
  const int64_t r01 = z1 * nxy + y0 * nx, r11 = z1 * nxy + y1 * nx;
  // c<x><y><z>
  const T c[8] = {weighted_voxel(v, w, r00 + x0), weighted_voxel(v, w, r00 + x1),
                  weighted_voxel(v, w, r10 + x0), weighted_voxel(v, w, r10 + x1),
                  weighted_voxel(v, w, r01 + x0), weighted_voxel(v, w, r01 + x1),
                  weighted_voxel(v, w, r11 + x0), weighted_voxel(v, w, r11 + x1)};
  T dtx, dty, dtz;
  const T val = trilinear_corners(c, tx, ty, tz, dtx, dty, dtz);
  g[0] = inx ? dtx * v.ivx : T(0);
  g[1] = iny ? dty * v.ivy : T(0);
  g[2] = inz ? dtz * v.ivz : T(0);
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
  int x0, x1, y0, y1, z0, z1;
  T tx, ty, tz;
  bool in;
  axis_lookup((px - v.ox) * v.ivx, v.nx, x0, x1, tx, in);
  axis_lookup((py - v.oy) * v.ivy, v.ny, y0, y1, ty, in);
  axis_lookup((pz - v.oz) * v.ivz, v.nz, z0, z1, tz, in);
  const int64_t nx = v.nx, nxy = int64_t(v.nx) * v.ny, nc = v.nc;
  const T* d = v.data + channel;
  auto at = [&](int x, int y, int z) { return d[((int64_t)z * nxy + (int64_t)y * nx + x) * nc]; };
  const T c[8] = {at(x0, y0, z0), at(x1, y0, z0), at(x0, y1, z0), at(x1, y1, z0),
                  at(x0, y0, z1), at(x1, y0, z1), at(x0, y1, z1), at(x1, y1, z1)};
  return trilinear_value(c, tx, ty, tz);
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
  const T px = R[0] * x[0] + R[1] * x[1] + R[2] * x[2] + t[0];
  const T py = R[3] * x[0] + R[4] * x[1] + R[5] * x[2] + t[1];
  const T pz = R[6] * x[0] + R[7] * x[1] + R[8] * x[2] + t[2];
  T g[3];
  const T val = sample_weighted_grad(v, w, px, py, pz, g);
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
  const T px = R[0] * x[0] + R[1] * x[1] + R[2] * x[2] + t[0];
  const T py = R[3] * x[0] + R[4] * x[1] + R[5] * x[2] + t[1];
  const T pz = R[6] * x[0] + R[7] * x[1] + R[8] * x[2] + t[2];
  const A d = A(sample_channel(v, channel, px, py, pz));
  const A wt = A(weight);
  acc.v[0] += wt;
  acc.v[1] += wt * wt;
  acc.v[2] += d;
  acc.v[3] += d * d;
  acc.v[4] += wt * d;
  acc.v[5] += d > A(threshold) ? A(1) : A(0);
}

// Gaussian splatting: the index box [lo, hi] of voxels within `radius` of world point p
// along one axis (empty when lo > hi).
template <typename T>
DF_HD void splat_range(T p, T origin, T voxel, T radius, int n, int& lo, int& hi) {
  const T a = (p - radius - origin) / voxel, b = (p + radius - origin) / voxel;
  lo = static_cast<int>(ceil(a));
  hi = static_cast<int>(floor(b));
  if (lo < 0) lo = 0;
  if (hi > n - 1) hi = n - 1;
}

}  // namespace difffit
