// SIMD score kernel for the common case of fitting: float32, one channel (the pyramid
// levels summed with their weights). Included by kernels_cpu.cpp only when it is compiled
// with -mavx2 -mfma (the "avx2" variant: 8 atoms per vector) or, in addition, with AVX-512
// (the "avx512" variant: 16 atoms per vector, hardware gathers, 32 registers).
//
// A vector of atoms moves through the whole computation together. The kernel is written
// once, for a vector type V (F8 or F16 below, same operations); the trilinear formulas are
// math.h's (trilinear_corners is instantiated with V), and `axis` is axis_lookup written
// with vector min / max / compare. The tests run every variant (DIFFFIT_CPU=baseline|avx2
// selects a lower one). What makes it fast:
//  * The two x corners of a cell are adjacent floats, so the 8 corners of an atom are four
//    64-bit loads, regrouped into per-corner vectors. With AVX2 alone these are scalar
//    loads and shuffles (on AMD Zen 3 a hardware gather is slower); with AVX-512 they are
//    8 x 64-bit gathers, which keep Intel's single shuffle port free.
//  * Groups of 32 atoms carry a bounding sphere: a group that lands inside the grid (most,
//    in a padded map) skips the clamping.
//  * Sums run in float over at most 16 atoms per lane, then in double, as in the scalar
//    kernel, so float32 scores over large molecules keep their precision.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "difffit/kernels.h"

namespace difffit {
namespace DIFFFIT_CPU_NS {
namespace simd {

// ---------------------------------------------------------------------------------------
// 8 lanes (AVX2 + FMA)

struct F8 {
  static constexpr int W = 8;
  using I = __m256i;  // lane indices
  __m256 v;
  F8() = default;
  F8(float x) : v(_mm256_set1_ps(x)) {}
  F8(__m256 x) : v(x) {}
  static F8 load(const float* p) { return _mm256_loadu_ps(p); }
  static I set1_i(int x) { return _mm256_set1_epi32(x); }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
};
inline F8 operator+(F8 a, F8 b) { return _mm256_add_ps(a.v, b.v); }
inline F8 operator-(F8 a, F8 b) { return _mm256_sub_ps(a.v, b.v); }
inline F8 operator*(F8 a, F8 b) { return _mm256_mul_ps(a.v, b.v); }
inline F8& operator+=(F8& a, F8 b) { return a = a + b; }
inline F8 fmadd(F8 a, F8 b, F8 c) { return _mm256_fmadd_ps(a.v, b.v, c.v); }
// z * SZ + y * SY + x for lane indices.
inline __m256i cell_index(__m256i x, __m256i y, __m256i z, __m256i SY, __m256i SZ) {
  return _mm256_add_epi32(_mm256_add_epi32(_mm256_mullo_epi32(z, SZ), _mm256_mullo_epi32(y, SY)), x);
}

// Eight float lanes summed into double: two 4-lane double accumulators.
struct SumD8 {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  void add(F8 x) {
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(x.v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(x.v, 1)));
  }
  double total() const {
    alignas(32) double t[4];
    _mm256_store_pd(t, _mm256_add_pd(lo, hi));
    return (t[0] + t[1]) + (t[2] + t[3]);
  }
};

// axis_lookup of math.h for fractional indices u along an axis of n voxels: the lower
// corner index, the fraction t in [0, 1] and the derivative factor m (1 / voxel size
// inside the grid, 0 where the coordinate was clamped). NaN lands on voxel 0, as there.
inline void axis(F8 u, int n, float inv_voxel, __m256i& i0, F8& t, F8& m) {
  const __m256 zero = _mm256_setzero_ps(), last = _mm256_set1_ps(float(n - 1));
  const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(u.v, zero, _CMP_GE_OQ),
                                      _mm256_cmp_ps(u.v, last, _CMP_LE_OQ));
  const __m256 uc = _mm256_min_ps(_mm256_max_ps(u.v, zero), last);
  const __m256i i = _mm256_min_epi32(_mm256_cvttps_epi32(uc),  // uc >= 0: truncation is floor
                                     _mm256_set1_epi32(n > 1 ? n - 2 : 0));
  i0 = i;
  t = _mm256_sub_ps(uc, _mm256_cvtepi32_ps(i));
  m = _mm256_and_ps(inside, _mm256_set1_ps(inv_voxel));
}

// axis for atoms known to lie inside the grid (u in [0, n - 1) with a margin): no clamping,
// and the same results as axis there.
inline void axis_interior(F8 u, float inv_voxel, __m256i& i0, F8& t, F8& m) {
  i0 = _mm256_cvttps_epi32(u.v);
  t = u - F8(_mm256_cvtepi32_ps(i0));
  m = F8(inv_voxel);
}

// The corners (x0, x1) at float offset `off` from each lane's base index, as two vectors.
inline void load_x_pairs(const float* data, const int* base, int off, F8& c0, F8& c1) {
  const float* q = data + off;
  auto pair = [&](int k) { return _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(q + base[k]))); };
  // A = [p0 p1 | p4 p5], B = [p2 p3 | p6 p7] (p_k = the pair of lane k); shuffling the
  // even and odd floats of A and B within each 128-bit half then yields lanes 0..7 in order.
  const __m256 A = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_movelh_ps(pair(0), pair(1))),
                                        _mm_movelh_ps(pair(4), pair(5)), 1);
  const __m256 B = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_movelh_ps(pair(2), pair(3))),
                                        _mm_movelh_ps(pair(6), pair(7)), 1);
  c0 = _mm256_shuffle_ps(A, B, _MM_SHUFFLE(2, 0, 2, 0));
  c1 = _mm256_shuffle_ps(A, B, _MM_SHUFFLE(3, 1, 3, 1));
}

// The 8 corners c[x + 2 y + 4 z] of the lanes' atoms whose cells start at float offsets
// `base`, o: corner_offsets of an x axis of more than one voxel (o[2 r + 1] = o[2 r] + 1, so
// each x pair is one 64-bit load). Scalar 64-bit loads and shuffles: on AMD Zen 3 an AVX2
// hardware gather is slower.
inline void load_corners(const float* data, __m256i base, const int o[8], F8 c[8]) {
  alignas(32) int bs[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(bs), base);
  for (int r = 0; r < 4; ++r) load_x_pairs(data, bs, o[2 * r], c[2 * r], c[2 * r + 1]);
}

#ifdef __AVX512DQ__
// ---------------------------------------------------------------------------------------
// 16 lanes (AVX-512 F, VL, DQ, BW)

struct F16 {
  static constexpr int W = 16;
  using I = __m512i;
  __m512 v;
  F16() = default;
  F16(float x) : v(_mm512_set1_ps(x)) {}
  F16(__m512 x) : v(x) {}
  static F16 load(const float* p) { return _mm512_loadu_ps(p); }
  static I set1_i(int x) { return _mm512_set1_epi32(x); }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
};
inline F16 operator+(F16 a, F16 b) { return _mm512_add_ps(a.v, b.v); }
inline F16 operator-(F16 a, F16 b) { return _mm512_sub_ps(a.v, b.v); }
inline F16 operator*(F16 a, F16 b) { return _mm512_mul_ps(a.v, b.v); }
inline F16& operator+=(F16& a, F16 b) { return a = a + b; }
inline F16 fmadd(F16 a, F16 b, F16 c) { return _mm512_fmadd_ps(a.v, b.v, c.v); }
inline __m512i cell_index(__m512i x, __m512i y, __m512i z, __m512i SY, __m512i SZ) {
  return _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(z, SZ), _mm512_mullo_epi32(y, SY)), x);
}

struct SumD16 {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  void add(F16 x) {
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(x.v)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps(x.v, 1)));
  }
  double total() const {
    alignas(64) double t[8];
    _mm512_store_pd(t, _mm512_add_pd(lo, hi));
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
};

inline void axis(F16 u, int n, float inv_voxel, __m512i& i0, F16& t, F16& m) {
  const __m512 zero = _mm512_setzero_ps(), last = _mm512_set1_ps(float(n - 1));
  const __mmask16 inside = _mm512_cmp_ps_mask(u.v, zero, _CMP_GE_OQ) &
                           _mm512_cmp_ps_mask(u.v, last, _CMP_LE_OQ);
  const __m512 uc = _mm512_min_ps(_mm512_max_ps(u.v, zero), last);
  const __m512i i = _mm512_min_epi32(_mm512_cvttps_epi32(uc), _mm512_set1_epi32(n > 1 ? n - 2 : 0));
  i0 = i;
  t = _mm512_sub_ps(uc, _mm512_cvtepi32_ps(i));
  m = _mm512_maskz_mov_ps(inside, _mm512_set1_ps(inv_voxel));
}

inline void axis_interior(F16 u, float inv_voxel, __m512i& i0, F16& t, F16& m) {
  i0 = _mm512_cvttps_epi32(u.v);
  t = u - F16(_mm512_cvtepi32_ps(i0));
  m = F16(inv_voxel);
}

// As load_corners for F8, with two hardware gathers of eight 64-bit (x0, x1) pairs per row
// (they keep Intel's single shuffle port free); two-source permutes collect the x0 and the
// x1 floats of all 16 lanes.
inline void load_corners(const float* data, __m512i base, const int o[8], F16 c[8]) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m256i lo = _mm512_castsi512_si256(base), hi = _mm512_extracti64x4_epi64(base, 1);
  for (int r = 0; r < 4; ++r) {
    const __m512 a = _mm512_castpd_ps(_mm512_i32gather_pd(lo, data + o[2 * r], 4));
    const __m512 b = _mm512_castpd_ps(_mm512_i32gather_pd(hi, data + o[2 * r], 4));
    c[2 * r] = _mm512_permutex2var_ps(a, even, b);
    c[2 * r + 1] = _mm512_permutex2var_ps(a, odd, b);
  }
}
#endif

// The vector type of this build, and its float -> double accumulator: 16 lanes with
// AVX-512, else 8.
#ifdef __AVX512DQ__
using Vec = F16;
using SumD = SumD16;
#else
using Vec = F8;
using SumD = SumD8;
#endif
constexpr int kLanes = Vec::W;

// ---------------------------------------------------------------------------------------
// The kernel

// Atoms are scored in blocks of kBlockAtoms (the float sums of a block are added in
// double); each group of kSphereAtoms has a bounding sphere, so that a placement can tell
// at once whether all of the group's atoms land inside the grid. Small groups are more
// often inside (W1: 84 % of 32-atom groups, 48 % of 128-atom groups).
constexpr int kBlockAtoms = 128;
constexpr int kBlockVec = kBlockAtoms / kLanes;
constexpr int kSphereAtoms = 32;
constexpr int kSphereVec = kSphereAtoms / kLanes;

// Atoms of all molecules as padded structure-of-arrays: molecule m occupies
// [start[m], start[m] + kLanes * ceil(n_m / kLanes)); padding lanes repeat the last atom
// with keep = 0.
struct PaddedAtoms {
  const float *x, *y, *z, *keep;
  const int64_t* start;
  const float* sphere;         // [groups, 4]: centre (x, y, z) and radius of each group
  const int64_t* first_sphere; // [M]: index of molecule m's first group in `sphere`
};

// Whether every point within `r` of centre c (centred coordinates) falls strictly inside
// the grid after the placement (R, t), with a margin of 0.01 voxel for float rounding.
inline bool sphere_inside(const VolumeView<float>& v, const float R[9], const float t[3],
                          const float c[3], float r) {
  const float o[3] = {v.ox, v.oy, v.oz}, iv[3] = {v.ivx, v.ivy, v.ivz};
  const int n[3] = {v.nx, v.ny, v.nz};
  const Point<float> pc = move_point(R, t, c);
  const float p[3] = {pc.x, pc.y, pc.z};
  bool inside = true;
  for (int d = 0; d < 3; ++d) {
    const float u = (p[d] - o[d]) * iv[d];
    inside &= (u - r * iv[d] >= 0.01f) & (u + r * iv[d] <= float(n[d] - 1) - 0.01f);
  }
  return inside;
}

// Score of placement p of a one-channel float volume (same outputs as the scalar kernel).
// Without Grad (a.grad_q and a.grad_t null: a rotation scan) only the score is written: the
// same value formula and summation order, so the same score, bit for bit, in about half the
// time (no derivative terms, no second pass).
template <bool Grad>
inline void score_placement_c1(const ScoreArgs<float>& a, const PaddedAtoms& atoms, int64_t p) {
  using V = Vec;
  constexpr int L = kLanes;
  const VolumeView<float>& v = a.vol;
  const Placed<float> pl = resolve_placement(a.place, a.offsets, a.n_mol, p);
  const float* R = pl.R;
  const float* t = pl.t;
  const int64_t m = pl.m, n = pl.end - pl.begin;
  const int sy = v.nx, sz = v.nx * v.ny;
  // A one-voxel x axis has no x1 corner: read x0 twice through a scalar fallback.
  const bool x_pairs = v.nx > 1;
  // Corner offsets are constant: a one-voxel axis reads the same voxel twice.
  int o[8];
  corner_offsets(x_pairs ? 1 : 0, v.ny > 1 ? sy : 0, v.nz > 1 ? sz : 0, o);
  // Fractional index u = (R x + t - origin) / voxel, with the rows of R scaled by 1 / voxel
  // and fused multiply-adds: fewer operations than move_point followed by the scaling, so
  // not move_point's rounding (the results agree with the scalar kernels to float rounding).
  const V R0(R[0] * v.ivx), R1(R[1] * v.ivx), R2(R[2] * v.ivx);
  const V R3(R[3] * v.ivy), R4(R[4] * v.ivy), R5(R[5] * v.ivy);
  const V R6(R[6] * v.ivz), R7(R[7] * v.ivz), R8(R[8] * v.ivz);
  const V Tx((t[0] - v.ox) * v.ivx), Ty((t[1] - v.oy) * v.ivy), Tz((t[2] - v.oz) * v.ivz);
  const typename V::I SY = V::set1_i(sy), SZ = V::set1_i(sz);
  const float* data = v.data;
  SumD acc[13];
  const int64_t s0 = atoms.start[m], n_vec = (n + L - 1) / L;
  // Blocks of kBlockVec vectors in two passes: pass 1 samples (value and spatial gradient
  // per atom, kept in L1), pass 2 accumulates the 13 sums. Two passes need fewer registers
  // than one and measured faster even with 32; long blocks make the conversion of the
  // float block sums to double rare.
  constexpr int kVec = kBlockVec;
  alignas(64) float val_b[kVec][L], gx_b[kVec][L], gy_b[kVec][L], gz_b[kVec][L];
  const float* sphere = atoms.sphere + 4 * atoms.first_sphere[m];
  V block_s = 0.f;  // without Grad: the block's score sum
  for (int64_t b = 0; b < n_vec; b += kVec) {
    const int nb = int(b + kVec < n_vec ? kVec : n_vec - b);
    bool interior[kVec / kSphereVec];  // per group of kSphereAtoms
    for (int k = 0; k < (nb + kSphereVec - 1) / kSphereVec; ++k, sphere += 4)
      interior[k] = sphere_inside(v, R, t, sphere, sphere[3]);
    for (int j = 0; j < nb; ++j) {
      const int64_t i = s0 + L * (b + j);
      const V X = V::load(atoms.x + i), Y = V::load(atoms.y + i), Z = V::load(atoms.z + i);
      typename V::I xi, yi, zi;
      V tx, ty, tz, mx, my, mz;
      const V ux = fmadd(R0, X, fmadd(R1, Y, fmadd(R2, Z, Tx)));
      const V uy = fmadd(R3, X, fmadd(R4, Y, fmadd(R5, Z, Ty)));
      const V uz = fmadd(R6, X, fmadd(R7, Y, fmadd(R8, Z, Tz)));
      if (interior[j / kSphereVec]) {
        axis_interior(ux, v.ivx, xi, tx, mx);
        axis_interior(uy, v.ivy, yi, ty, my);
        axis_interior(uz, v.ivz, zi, tz, mz);
      } else {
        axis(ux, v.nx, v.ivx, xi, tx, mx);
        axis(uy, v.ny, v.ivy, yi, ty, my);
        axis(uz, v.nz, v.ivz, zi, tz, mz);
      }
      const typename V::I base = cell_index(xi, yi, zi, SY, SZ);
      V c[8];  // c[x + 2 y + 4 z]
      if (x_pairs) {
        load_corners(data, base, o, c);
      } else {  // o[2 r + 1] == o[2 r]: one load per pair
        alignas(64) int bs[L];
        std::memcpy(bs, &base, sizeof(bs));
        for (int r = 0; r < 4; ++r) {
          alignas(64) float cr[L];
          for (int k = 0; k < L; ++k) cr[k] = data[bs[k] + o[2 * r]];
          c[2 * r] = c[2 * r + 1] = V::load(cr);
        }
      }
      V dtx, dty, dtz;
      V val = trilinear_corners(c, tx, ty, tz, dtx, dty, dtz);
      if (b + j == n_vec - 1) {  // only a molecule's last vector may hold padding lanes
        const V K = V::load(atoms.keep + i);
        val = val * K;
        mx = mx * K; my = my * K; mz = mz * K;
      }
      if constexpr (Grad) {
        val.store(val_b[j]);
        (dtx * mx).store(gx_b[j]);
        (dty * my).store(gy_b[j]);
        (dtz * mz).store(gz_b[j]);
      } else {
        block_s += val;  // pass 2's order: s += val_b[0], val_b[1], ...
      }
    }
    if constexpr (!Grad) {
      acc[0].add(block_s);
      block_s = 0.f;
    } else {
      V s = 0.f, g0 = 0.f, g1 = 0.f, g2 = 0.f;
      V G0 = 0.f, G1 = 0.f, G2 = 0.f, G3 = 0.f, G4 = 0.f, G5 = 0.f, G6 = 0.f, G7 = 0.f, G8 = 0.f;
      for (int j = 0; j < nb; ++j) {
        const int64_t i = s0 + L * (b + j);
        const V X = V::load(atoms.x + i), Y = V::load(atoms.y + i), Z = V::load(atoms.z + i);
        const V gx = V::load(gx_b[j]), gy = V::load(gy_b[j]), gz = V::load(gz_b[j]);
        s += V::load(val_b[j]);
        g0 += gx; g1 += gy; g2 += gz;
        G0 = fmadd(gx, X, G0); G1 = fmadd(gx, Y, G1); G2 = fmadd(gx, Z, G2);
        G3 = fmadd(gy, X, G3); G4 = fmadd(gy, Y, G4); G5 = fmadd(gy, Z, G5);
        G6 = fmadd(gz, X, G6); G7 = fmadd(gz, Y, G7); G8 = fmadd(gz, Z, G8);
      }
      acc[0].add(s);
      acc[1].add(g0); acc[2].add(g1); acc[3].add(g2);
      acc[4].add(G0); acc[5].add(G1); acc[6].add(G2); acc[7].add(G3); acc[8].add(G4);
      acc[9].add(G5); acc[10].add(G6); acc[11].add(G7); acc[12].add(G8);
    }
  }
  const float w0 = a.weights[0];  // the single channel's weight scales value and gradients
  if constexpr (!Grad) {
    a.score[p] = float(w0 * acc[0].total() * (1.0 / double(n)));  // score_finish's
    return;
  }
  ScoreAcc<double> out;
  out.s = w0 * acc[0].total();
  for (int k = 0; k < 3; ++k) out.g[k] = w0 * acc[1 + k].total();
  for (int k = 0; k < 9; ++k) out.G[k] = w0 * acc[4 + k].total();
  score_finish(out, n, pl.u, pl.qnorm, a.score + p, a.grad_q + 4 * p, a.grad_t + 3 * p);
}

}  // namespace simd
}  // namespace DIFFFIT_CPU_NS
}  // namespace difffit
