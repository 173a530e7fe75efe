// Lloyd steps of k-means for many point sets at once (unit weights), parallel over the
// sets: the coarse points of every candidate of a library (python/difffit/gmm.py: kmeans
// is the reference, one set at a time in numpy, with the same steps and the same handling
// of a cluster that empties).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "difffit/kernels.h"

namespace difffit {

namespace {

// One set: n points x [n, 3], k centres c [k, 3] (updated), labels [n].
void lloyd(const double* x, int64_t n, double* c, int64_t k, int iters, int64_t* labels) {
  std::vector<double> xx(n), cc(k), dist(n), mass(k), sum(3 * k);
  std::vector<int64_t> next(n);
  for (int64_t i = 0; i < n; ++i)
    xx[i] = x[3 * i] * x[3 * i] + x[3 * i + 1] * x[3 * i + 1] + x[3 * i + 2] * x[3 * i + 2];
  std::fill(labels, labels + n, int64_t(-1));
  for (int it = 0; it < iters; ++it) {
    for (int64_t j = 0; j < k; ++j)
      cc[j] = c[3 * j] * c[3 * j] + c[3 * j + 1] * c[3 * j + 1] + c[3 * j + 2] * c[3 * j + 2];
    // The nearest centre by |x|^2 - 2 x.c + |c|^2 (the reference's dense form; the
    // first of equal distances).
    for (int64_t i = 0; i < n; ++i) {
      const double* p = x + 3 * i;
      double best = 0;
      int64_t arg = 0;
      for (int64_t j = 0; j < k; ++j) {
        const double* q = c + 3 * j;
        const double d2 = xx[i] - 2.0 * (p[0] * q[0] + p[1] * q[1] + p[2] * q[2]) + cc[j];
        if (j == 0 || d2 < best) {
          best = d2;
          arg = j;
        }
      }
      next[i] = arg;
      dist[i] = std::sqrt(std::max(best, 0.0));
    }
    std::fill(mass.begin(), mass.end(), 0.0);
    std::fill(sum.begin(), sum.end(), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      mass[next[i]] += 1.0;
      for (int d = 0; d < 3; ++d) sum[3 * next[i] + d] += x[3 * i + d];
    }
    std::vector<int64_t> empty;
    for (int64_t j = 0; j < k; ++j) {
      if (mass[j] <= 0) {
        empty.push_back(j);
        continue;
      }
      for (int d = 0; d < 3; ++d) c[3 * j + d] = sum[3 * j + d] / mass[j];
    }
    if (!empty.empty()) {  // re-seeded at the worst-served points, farthest first
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), int64_t(0));
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return dist[a] > dist[b]; });
      for (size_t e = 0; e < empty.size(); ++e)
        for (int d = 0; d < 3; ++d) c[3 * empty[e] + d] = x[3 * order[e] + d];
    }
    const bool done = std::equal(next.begin(), next.end(), labels);
    std::copy(next.begin(), next.end(), labels);
    if (done) break;
  }
}

}  // namespace

void kmeans_cpu(const KmeansArgs& a) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t m = 0; m < a.n_sets; ++m) {
    const int64_t p0 = a.offsets[m], c0 = a.centre_offsets[m];
    lloyd(a.points + 3 * p0, a.offsets[m + 1] - p0, a.centres + 3 * c0,
          a.centre_offsets[m + 1] - c0, a.iters, a.labels + p0);
  }
}

}  // namespace difffit
