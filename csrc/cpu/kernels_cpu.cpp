// CPU backend: OpenMP loops over placements around the shared per-point math of
// difffit/math.h. Sums are accumulated in double whatever the storage type, so float32
// scores over thousands of atoms keep their precision.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>
#include <vector>

#include "difffit/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Compiled twice (see CMakeLists.txt): once for the baseline instruction set and once with
// AVX2 + FMA, each in its own namespace; csrc/cpu/dispatch.cpp picks one at run time.
#ifndef DIFFFIT_CPU_NS
#define DIFFFIT_CPU_NS base
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define DIFFFIT_SIMD_SCORE 1
#include "score_avx2.h"
#endif

namespace difffit {
namespace DIFFFIT_CPU_NS {

// The scalar kernels process points in blocks of kBlock in three passes: the corner
// indices and fractions of every point of the block (arithmetic, vectorisable), then the
// corner values (independent gathers, which the CPU overlaps instead of waiting on one
// cache miss at a time), then interpolation and sums (vectorisable). The formulas are
// those of math.h (move_point, axis_lookup, corner_offsets, trilinear_corners /
// trilinear_value); only the loop order differs from the GPU path.
constexpr int kBlock = 32;

// Pass 1 of the blocked kernels: where each of a block's points lands in the grid after
// the placement (R, t): the float offset of its cell's first corner (base), the offsets
// to the x + 1, y + 1 and z + 1 corners (0 on a one-voxel axis), the fractions, and the
// derivative factor per axis (1 / voxel size, 0 where the point was clamped).
template <typename T>
struct BlockCells {
  int base[kBlock], dx[kBlock], dy[kBlock], dz[kBlock];
  T tx[kBlock], ty[kBlock], tz[kBlock], mx[kBlock], my[kBlock], mz[kBlock];
};

template <typename T>
inline void locate_block(const VolumeView<T>& v, int nc, const T* R, const T* t, const T* points,
                         int nb, BlockCells<T>& b) {
  // 32-bit offsets vectorise (the bindings reject volumes of 2^31 values or more).
  const int sy = v.nx * nc, sz = v.nx * v.ny * nc;
#pragma omp simd
  for (int k = 0; k < nb; ++k) {
    const T* x = points + 3 * k;
    const Point<T> p = move_point(R, t, x);
    int x0, x1, y0, y1, z0, z1;
    bool inx, iny, inz;
    axis_lookup((p.x - v.ox) * v.ivx, v.nx, x0, x1, b.tx[k], inx);
    axis_lookup((p.y - v.oy) * v.ivy, v.ny, y0, y1, b.ty[k], iny);
    axis_lookup((p.z - v.oz) * v.ivz, v.nz, z0, z1, b.tz[k], inz);
    b.base[k] = z0 * sz + y0 * sy + x0 * nc;
    b.dx[k] = (x1 - x0) * nc;
    b.dy[k] = (y1 - y0) * sy;
    b.dz[k] = (z1 - z0) * sz;
    b.mx[k] = inx ? v.ivx : T(0);  // a clamped axis has no derivative
    b.my[k] = iny ? v.ivy : T(0);
    b.mz[k] = inz ? v.ivz : T(0);
  }
}

// Pass 2: the 8 corner values c[x + 2y + 4z][k] of each point, value(q) reading the voxel
// whose first channel is at q (independent loads, which the CPU overlaps).
template <typename T, typename Value>
inline void block_corners(const T* data, const BlockCells<T>& b, int nb, Value value, T c[8][kBlock]) {
  for (int k = 0; k < nb; ++k) {
    const T* d = data + b.base[k];
    int o[8];
    corner_offsets(b.dx[k], b.dy[k], b.dz[k], o);
    for (int j = 0; j < 8; ++j) c[j][k] = value(d + o[j]);
  }
}

// Score of one placement (channel-weighted corners). NC > 0 fixes the channel count at
// compile time for the common pyramid depths.
template <typename T, int NC>
void score_placement(const ScoreArgs<T>& a, int64_t p) {
  const VolumeView<T>& v = a.vol;
  const int nc = NC > 0 ? NC : v.nc;
  const Placed<T> pl = resolve_placement(a.place, a.offsets, a.n_mol, p);
  const int64_t begin = pl.begin, end = pl.end;
  T w[NC > 0 ? NC : kMaxChannels];  // weights in registers, not re-read per corner
  for (int ch = 0; ch < nc; ++ch) w[ch] = a.weights[ch];
  const auto weighted = [&](const T* q) {
    if (NC == 1) return w[0] * q[0];
    T s = T(0);
    for (int ch = 0; ch < nc; ++ch) s += w[ch] * q[ch];
    return s;
  };

  ScoreAcc<double> acc;
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int nb = int(end - b0 < kBlock ? end - b0 : kBlock);
    BlockCells<T> b;
    locate_block(v, nc, pl.R, pl.t, a.points + 3 * b0, nb, b);
    T c[8][kBlock];
    block_corners(v.data, b, nb, weighted, c);
    // Pass 3: value, spatial gradient and the per-placement sums.
    T s = 0, g0 = 0, g1 = 0, g2 = 0;
    T G0 = 0, G1 = 0, G2 = 0, G3 = 0, G4 = 0, G5 = 0, G6 = 0, G7 = 0, G8 = 0;
#pragma omp simd reduction(+ : s, g0, g1, g2, G0, G1, G2, G3, G4, G5, G6, G7, G8)
    for (int k = 0; k < nb; ++k) {
      T dtx, dty, dtz;
      const T ck[8] = {c[0][k], c[1][k], c[2][k], c[3][k], c[4][k], c[5][k], c[6][k], c[7][k]};
      s += trilinear_corners(ck, b.tx[k], b.ty[k], b.tz[k], dtx, dty, dtz);
      const T gx = dtx * b.mx[k], gy = dty * b.my[k], gz = dtz * b.mz[k];
      const T* x = a.points + 3 * (b0 + k);
      g0 += gx; g1 += gy; g2 += gz;
      G0 += gx * x[0]; G1 += gx * x[1]; G2 += gx * x[2];
      G3 += gy * x[0]; G4 += gy * x[1]; G5 += gy * x[2];
      G6 += gz * x[0]; G7 += gz * x[1]; G8 += gz * x[2];
    }
    // Block sums (<= kBlock terms) in T, running sums in double.
    acc.s += s;
    acc.g[0] += g0; acc.g[1] += g1; acc.g[2] += g2;
    acc.G[0] += G0; acc.G[1] += G1; acc.G[2] += G2;
    acc.G[3] += G3; acc.G[4] += G4; acc.G[5] += G5;
    acc.G[6] += G6; acc.G[7] += G7; acc.G[8] += G8;
  }
  score_finish(acc, end - begin, pl.u, pl.qnorm, a.score + p, a.grad_q + 4 * p, a.grad_t + 3 * p);
}

// Point samples (placements x their molecule's atoms) of a call. Calls below
// kParallelSamples (well under a millisecond of work) run on one thread: waking a team
// costs more than it saves, and far more when another process holds the cores.
constexpr int64_t kParallelSamples = 100000;
template <typename T>
int64_t n_samples(const Placements<T>& pl, const int64_t* offsets) {
  int64_t n = 0;
  for (int64_t p = 0; p < pl.n_place; ++p) n += offsets[pl.mol_idx[p] + 1] - offsets[pl.mol_idx[p]];
  return n;
}

// Z-order (Morton) key of a point given in cell units: the 10 low bits of each clamped
// cell index, interleaved. Sorting by it keeps points that are close in space close in
// the order.
template <typename T>
uint32_t morton_key(const T c[3]) {
  // Spreads the 10 bits of v to every third bit (bit i -> bit 3 i).
  const auto spread = [](uint32_t v) {
    v = (v | (v << 16)) & 0x030000FFu;
    v = (v | (v << 8)) & 0x0300F00Fu;
    v = (v | (v << 4)) & 0x030C30C3u;
    v = (v | (v << 2)) & 0x09249249u;
    return v;
  };
  uint32_t k = 0;
  for (int d = 0; d < 3; ++d) {
    const uint32_t cell = c[d] > T(0) ? (c[d] < T(1023) ? uint32_t(c[d]) : 1023u) : 0u;  // NaN -> 0
    k |= spread(cell) << d;
  }
  return k;
}

// Indices 0 .. n-1 (n < 2^32) sorted by key(i) (30-bit Morton keys), equal keys in index
// order. Short lists: one sort of 64-bit words (key in the high half, index in the low
// half), faster than sorting pairs.
template <typename Key>
std::vector<int64_t> sorted_by(int64_t n, Key key) {
  std::vector<uint32_t> k(n);
  for (int64_t i = 0; i < n; ++i) k[i] = key(i);
  std::vector<int64_t> order(n);
  if (n < 512) {  // a comparison sort of (key, index) pairs
    std::vector<uint64_t> w(n);
    for (int64_t i = 0; i < n; ++i) w[i] = (uint64_t(k[i]) << 32) | uint64_t(i);
    std::sort(w.begin(), w.end());
    for (int64_t i = 0; i < n; ++i) order[i] = int64_t(w[i] & 0xFFFFFFFFu);
    return order;
  }
  // The same order in linear time: a stable radix sort of the 30-bit keys, 10 bits a pass,
  // starting from index order (every call sorts every molecule's atoms again, and a
  // comparison sort of those cost as much as sampling them once).
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::vector<uint32_t> k2(n);
  std::vector<int64_t> o2(n);
  for (int shift = 0; shift < 30; shift += 10) {
    std::vector<int64_t> start(1025, 0);
    for (int64_t i = 0; i < n; ++i) ++start[((k[i] >> shift) & 1023u) + 1];
    for (int b = 0; b < 1024; ++b) start[b + 1] += start[b];
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = start[(k[i] >> shift) & 1023u]++;
      k2[pos] = k[i];
      o2[pos] = order[i];
    }
    k.swap(k2);
    order.swap(o2);
  }
  return order;
}

// Placements in Z-order of their translations, in cells of 8 voxels: a thread's
// consecutive placements then read overlapping parts of the map, which stay in its cache
// instead of being fetched again for every placement.
template <typename T>
std::vector<int64_t> spatial_order(const Placements<T>& pl, const VolumeView<T>& v) {
  const T inv[3] = {v.ivx / 8, v.ivy / 8, v.ivz / 8};
  const T org[3] = {v.ox, v.oy, v.oz};
  return sorted_by(pl.n_place, [&](int64_t p) {
    T c[3];
    for (int d = 0; d < 3; ++d) c[d] = (pl.trans[3 * p + d] - org[d]) * inv[d];
    return morton_key(c);
  });
}

#ifdef DIFFFIT_SIMD_SCORE
// Bounding sphere of each group of simd::kSphereAtoms padded atoms of every molecule
// (centroid, largest distance, widened by a relative 1e-5 so that float rounding cannot
// put an atom outside). Fills sphere [groups, 4] and first_sphere [M + 1].
void group_spheres(const float* x, const float* y, const float* z, const std::vector<int64_t>& start,
                   std::vector<float>& sphere, std::vector<int64_t>& first_sphere) {
  constexpr int64_t G = simd::kSphereAtoms;
  const int64_t M = int64_t(start.size()) - 1;
  first_sphere.assign(M + 1, 0);
  for (int64_t m = 0; m < M; ++m)
    first_sphere[m + 1] = first_sphere[m] + (start[m + 1] - start[m] + G - 1) / G;
  sphere.assign(4 * first_sphere[M], 0.f);
  float* sp = sphere.data();
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b0 = start[m]; b0 < start[m + 1]; b0 += G, sp += 4) {
      const int64_t b1 = std::min(b0 + G, start[m + 1]);
      double c[3] = {0, 0, 0}, r2 = 0;
      for (int64_t k = b0; k < b1; ++k) { c[0] += x[k]; c[1] += y[k]; c[2] += z[k]; }
      for (double& cd : c) cd /= double(b1 - b0);
      for (int64_t k = b0; k < b1; ++k)
        r2 = std::max(r2, (x[k] - c[0]) * (x[k] - c[0]) + (y[k] - c[1]) * (y[k] - c[1]) +
                          (z[k] - c[2]) * (z[k] - c[2]));
      const double r = std::sqrt(r2);
      sp[0] = float(c[0]); sp[1] = float(c[1]); sp[2] = float(c[2]);
      sp[3] = float(r * (1 + 1e-5) + 1e-5 * (std::abs(c[0]) + std::abs(c[1]) + std::abs(c[2])));
    }
  }
}

// One-channel float32 volumes take the vector-of-atoms kernel of score_avx2.h (8 or 16
// lanes), which reads the atoms as padded structure-of-arrays (O(atoms) to build; the
// last few are kept, prepared_atoms). Within each molecule the atoms are put in Z-order
// (4 A cells): a rigid motion keeps neighbours together, so consecutive atoms then read
// nearby voxels from cache. Only the order of the sums changes.

// The padded structure-of-arrays atoms of a call, with their bounding spheres.
struct PreparedAtoms {
  std::vector<float> points;      // the call's points [A, 3] and offsets [M + 1]: the key
  std::vector<int64_t> offsets;
  std::vector<float> soa;         // x, y, z, keep, each start[M] long
  std::vector<int64_t> start;
  std::vector<float> sphere;
  std::vector<int64_t> first_sphere;
};

std::shared_ptr<const PreparedAtoms> prepare_atoms(const ScoreArgs<float>& a) {
  const int64_t M = a.n_mol;
  auto out = std::make_shared<PreparedAtoms>();
  out->points.assign(a.points, a.points + 3 * a.offsets[M]);
  out->offsets.assign(a.offsets, a.offsets + M + 1);
  std::vector<int64_t>& start = out->start;
  start.assign(M + 1, 0);
  constexpr int64_t L = simd::kLanes;
  for (int64_t m = 0; m < M; ++m) start[m + 1] = start[m] + (a.offsets[m + 1] - a.offsets[m] + L - 1) / L * L;
  out->soa.assign(4 * start[M] + 1, 0.f);
  float *x = out->soa.data(), *y = x + start[M], *z = y + start[M], *keep = z + start[M];
  for (int64_t m = 0; m < M; ++m) {
    const int64_t b = a.offsets[m], n = a.offsets[m + 1] - b;
    const std::vector<int64_t> order = sorted_by(n, [&](int64_t k) {  // 4 A cells
      const float* pt = a.points + 3 * (b + k);
      const float c[3] = {pt[0] * 0.25f + 512.f, pt[1] * 0.25f + 512.f, pt[2] * 0.25f + 512.f};
      return morton_key(c);
    });
    for (int64_t k = 0; k < start[m + 1] - start[m]; ++k) {
      const float* pt = a.points + 3 * (b + order[std::min(k, n - 1)]);
      x[start[m] + k] = pt[0]; y[start[m] + k] = pt[1]; z[start[m] + k] = pt[2];
      keep[start[m] + k] = k < n ? 1.f : 0.f;
    }
  }
  group_spheres(x, y, z, start, out->sphere, out->first_sphere);
  return out;
}

// The prepared atoms of a call's points: a descent calls the kernel again and again with
// the same points, and preparing them (Z-order sort, padding, spheres) cost as much as
// sampling them when there are few placements per molecule. The last few are kept, keyed
// by the points' and offsets' full contents (compared, not hashed: a hit is exact).
std::shared_ptr<const PreparedAtoms> prepared_atoms(const ScoreArgs<float>& a) {
  static std::mutex mu;
  static std::list<std::shared_ptr<const PreparedAtoms>> recent;  // most recent first
  constexpr size_t kKept = 4;
  const int64_t M = a.n_mol, A = a.offsets[M];
  const auto same = [&](const PreparedAtoms& p) {
    return int64_t(p.offsets.size()) == M + 1 && int64_t(p.points.size()) == 3 * A &&
           std::memcmp(p.offsets.data(), a.offsets, sizeof(int64_t) * (M + 1)) == 0 &&
           std::memcmp(p.points.data(), a.points, sizeof(float) * 3 * A) == 0;
  };
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = recent.begin(); it != recent.end(); ++it)
      if (same(**it)) {
        auto hit = *it;
        recent.erase(it);
        recent.push_front(hit);
        return hit;
      }
  }
  auto made = prepare_atoms(a);
  std::lock_guard<std::mutex> lock(mu);
  recent.push_front(made);
  if (recent.size() > kKept) recent.pop_back();
  return made;
}

void score_all_simd(const ScoreArgs<float>& a, const std::vector<int64_t>& order) {
  const std::shared_ptr<const PreparedAtoms> prep = prepared_atoms(a);
  const int64_t n = prep->start.back();
  const float* x = prep->soa.data();
  const simd::PaddedAtoms atoms{x, x + n, x + 2 * n, x + 3 * n, prep->start.data(),
                                prep->sphere.data(), prep->first_sphere.data()};
  const int64_t P = a.place.n_place;
  if (a.grad_q == nullptr) {
#pragma omp parallel for schedule(dynamic, 8) if (n_samples(a.place, a.offsets) >= kParallelSamples)
    for (int64_t i = 0; i < P; ++i) simd::score_placement_c1<false>(a, atoms, order[i]);
    return;
  }
#pragma omp parallel for schedule(dynamic, 8) if (n_samples(a.place, a.offsets) >= kParallelSamples)
  for (int64_t i = 0; i < P; ++i) simd::score_placement_c1<true>(a, atoms, order[i]);
}
#endif

template <typename T, int NC>
void score_all(const ScoreArgs<T>& a) {
  const std::vector<int64_t> order = spatial_order(a.place, a.vol);
#ifdef DIFFFIT_SIMD_SCORE
  if constexpr (std::is_same_v<T, float> && NC == 1) return score_all_simd(a, order);
#endif
  const int64_t P = a.place.n_place;
#pragma omp parallel for schedule(dynamic, 8) if (n_samples(a.place, a.offsets) >= kParallelSamples)
  for (int64_t i = 0; i < P; ++i) score_placement<T, NC>(a, order[i]);
}

template <typename T>
void score_channels(const ScoreArgs<T>& a) {
  switch (a.vol.nc) {
    case 1: return score_all<T, 1>(a);
    case 2: return score_all<T, 2>(a);
    case 3: return score_all<T, 3>(a);
    case 4: return score_all<T, 4>(a);
    case 5: return score_all<T, 5>(a);
    case 6: return score_all<T, 6>(a);
    case 8: return score_all<T, 8>(a);
    default: return score_all<T, 0>(a);
  }
}

template <typename T>
void score_cpu(const ScoreArgs<T>& a) {
  if (a.grad_q != nullptr && a.grad_t != nullptr) return score_channels(a);
#ifdef DIFFFIT_SIMD_SCORE
  if constexpr (std::is_same_v<T, float>)
    if (a.vol.nc == 1) return score_all_simd(a, spatial_order(a.place, a.vol));
#endif
  // The score only, where only the full kernel exists: its gradients go to scratch.
  std::vector<T> grad_q(4 * a.place.n_place), grad_t(3 * a.place.n_place);
  ScoreArgs<T> b = a;
  b.grad_q = grad_q.data();
  b.grad_t = grad_t.data();
  score_channels(b);
}

// Statistics of one placement, in the blocked three-pass form of score_placement (index
// arithmetic, independent corner loads, then interpolation and sums), with math.h's
// axis_lookup and trilinear_value; one channel of the volume is sampled.
template <typename T>
void stats_placement(const StatsArgs<T>& a, int64_t p) {
  const VolumeView<T>& v = a.vol;
  const Placed<T> pl = resolve_placement(a.place, a.offsets, a.n_mol, p);
  const int64_t begin = pl.begin, end = pl.end;
  const T* data = v.data + a.channel;
  const T threshold = a.threshold;
  StatsAcc<double> acc;
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int nb = int(end - b0 < kBlock ? end - b0 : kBlock);
    BlockCells<T> b;
    locate_block(v, v.nc, pl.R, pl.t, a.points + 3 * b0, nb, b);
    T c[8][kBlock];
    block_corners(data, b, nb, [](const T* q) { return q[0]; }, c);
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    int n_in = 0;  // a count, so that the comparison is a vector select, not a branch
    const T* pw = a.point_weights + b0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, n_in)
    for (int k = 0; k < nb; ++k) {
      const T ck[8] = {c[0][k], c[1][k], c[2][k], c[3][k], c[4][k], c[5][k], c[6][k], c[7][k]};
      const T d = trilinear_value(ck, b.tx[k], b.ty[k], b.tz[k]);
      const T w = pw[k];
      s0 += w; s1 += w * w; s2 += d; s3 += d * d; s4 += w * d;
      n_in += d > threshold;
    }
    // Block sums (<= kBlock terms) in T, running sums in double, as in the score kernel.
    acc.v[0] += s0; acc.v[1] += s1; acc.v[2] += s2; acc.v[3] += s3; acc.v[4] += s4; acc.v[5] += n_in;
  }
  for (int k = 0; k < kNumStats; ++k) a.stats[kNumStats * p + k] = T(acc.v[k]);
}

template <typename T>
void stats_cpu(const StatsArgs<T>& a) {
  const std::vector<int64_t> order = spatial_order(a.place, a.vol);
  const int64_t P = a.place.n_place;
#pragma omp parallel for schedule(dynamic, 8) if (n_samples(a.place, a.offsets) >= kParallelSamples)
  for (int64_t i = 0; i < P; ++i) stats_placement(a, order[i]);
}

// Splatting scatters into shared voxels. Instead of atomics, each thread owns slabs of z
// planes and visits every atom that reaches into them: writes never collide, and the
// result is bitwise reproducible (each voxel sums its atoms in input order, whatever the
// slabs). Atoms go in chunks: first each atom's voxel ranges and its Gaussian factors along
// x and y (parallel over atoms), then the slabs, each voxel a product of its factors.
template <typename T>
void splat_cpu(const SplatArgs<T>& args) {
  // A local copy: stores into the grid cannot alias it, so its fields stay in registers.
  const SplatArgs<T> a = args;
  const SplatGaussian<T> gauss(a.sigma, a.cutoff);
  const int64_t nx = a.nx, nxy = int64_t(a.nx) * a.ny;
  // Widest range splat_range can give along an axis (floor(2 radius / voxel) + 1 voxels).
  const int64_t wx = std::min<int64_t>(a.nx, int64_t(std::floor(2 * gauss.radius / a.vx)) + 2);
  const int64_t wy = std::min<int64_t>(a.ny, int64_t(std::floor(2 * gauss.radius / a.vy)) + 2);
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(16384, (int64_t(1) << 22) / (wx + wy)));
  // A few slabs per thread balance the load; an atom is looked at once per slab instead of
  // once per plane.
  int threads = 1;
#ifdef _OPENMP
  if (!omp_in_parallel()) threads = omp_get_max_threads();
#endif
  const int slabs = std::max(1, std::min(a.nz, 4 * threads));
  std::vector<int> lo(3 * chunk), hi(3 * chunk);
  std::vector<T> fx(chunk * wx), dx2(chunk * wx), fy(chunk * wy);
  for (int64_t c0 = 0; c0 < a.n_points; c0 += chunk) {
    const int64_t n = std::min(chunk, a.n_points - c0);
#pragma omp parallel for schedule(static) if (threads > 1)
    for (int64_t j = 0; j < n; ++j) {
      const T* p = a.points + 3 * (c0 + j);
      int* l = lo.data() + 3 * j;
      int* h = hi.data() + 3 * j;
      splat_range(p[0], a.ox, a.vx, gauss.radius, a.nx, l[0], h[0]);
      splat_range(p[1], a.oy, a.vy, gauss.radius, a.ny, l[1], h[1]);
      // Planes one wider each side: the dz test below decides, whatever the rounding.
      splat_range(p[2], a.oz, a.vz, gauss.radius, a.nz, l[2], h[2]);
      l[2] = std::max(l[2] - 1, 0);
      h[2] = std::min(h[2] + 1, a.nz - 1);
      for (int x = l[0]; x <= h[0]; ++x) {
        const T dx = splat_delta(a.ox, x, a.vx, p[0]);
        dx2[j * wx + (x - l[0])] = dx * dx;
        fx[j * wx + (x - l[0])] = gauss.factor(dx);
      }
      for (int y = l[1]; y <= h[1]; ++y)
        fy[j * wy + (y - l[1])] = gauss.factor(splat_delta(a.oy, y, a.vy, p[1]));
    }
#pragma omp parallel for schedule(dynamic, 1) if (threads > 1)
    for (int slab = 0; slab < slabs; ++slab) {
      const int z0 = int(int64_t(slab) * a.nz / slabs), z1 = int(int64_t(slab + 1) * a.nz / slabs);
      for (int64_t j = 0; j < n; ++j) {
        const int* l = lo.data() + 3 * j;
        const int* h = hi.data() + 3 * j;
        const int zb = std::max(l[2], z0), ze = std::min(h[2] + 1, z1);
        if (zb >= ze || l[0] > h[0] || l[1] > h[1]) continue;
        const T* p = a.points + 3 * (c0 + j);
        const T amp = a.amplitudes[c0 + j];
        const T* fxj = fx.data() + j * wx;
        const T* dx2j = dx2.data() + j * wx;
        const int bx = h[0] - l[0] + 1;
        for (int z = zb; z < ze; ++z) {
          const T dz = splat_delta(a.oz, z, a.vz, p[2]);
          // Early exits only: r2 = dx^2 + dyz >= dyz >= dz^2, so inside() would reject
          // every voxel of a skipped plane or row.
          if (!gauss.inside(dz * dz)) continue;
          const T fz = gauss.factor(dz);
          for (int y = l[1]; y <= h[1]; ++y) {
            const T dy = splat_delta(a.oy, y, a.vy, p[1]);
            const T dyz = dy * dy + dz * dz;
            if (!gauss.inside(dyz)) continue;
            const T fyj = fy[j * wy + (y - l[1])];
            T* row = a.grid + z * nxy + y * nx + l[0];
            // Adding 0 outside the radius leaves a voxel as it is and keeps the loop
            // branch-free, so it vectorises.
            for (int k = 0; k < bx; ++k)
              row[k] += gauss.inside(dx2j[k] + dyz) ? gauss.value(amp, fz, fyj, fxj[k]) : T(0);
          }
        }
      }
    }
  }
}

DIFFFIT_INSTANTIATE_CPU_ENTRY_POINTS

}  // namespace DIFFFIT_CPU_NS
}  // namespace difffit
