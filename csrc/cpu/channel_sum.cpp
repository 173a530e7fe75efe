// Weighted sum of a volume's channels, sum_c w[c] * V[voxel, c], into a one-channel volume.
// Trilinear sampling is linear in the volume, so the score op samples this sum instead of
// every channel when a call takes more samples than there are voxels / 8. Memory-bound:
// one pass, no temporaries (torch's volume @ weights is about 2x slower here).
#include "difffit/kernels.h"

namespace difffit {

template <typename T, int NC>
static void channel_sum_n(const T* vol, int64_t n_voxels, int nc, const T* w, T* out) {
  const int n = NC > 0 ? NC : nc;
  T wr[kMaxChannels];
  for (int c = 0; c < n; ++c) wr[c] = w[c];
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n_voxels; ++i) {
    const T* v = vol + i * n;
    T s = T(0);
    for (int c = 0; c < n; ++c) s += wr[c] * v[c];
    out[i] = s;
  }
}

template <typename T>
void channel_sum_cpu(const T* vol, int64_t n_voxels, int nc, const T* w, T* out) {
  switch (nc) {
    case 2: return channel_sum_n<T, 2>(vol, n_voxels, nc, w, out);
    case 3: return channel_sum_n<T, 3>(vol, n_voxels, nc, w, out);
    case 4: return channel_sum_n<T, 4>(vol, n_voxels, nc, w, out);
    case 5: return channel_sum_n<T, 5>(vol, n_voxels, nc, w, out);
    default: return channel_sum_n<T, 0>(vol, n_voxels, nc, w, out);
  }
}

template void channel_sum_cpu<float>(const float*, int64_t, int, const float*, float*);
template void channel_sum_cpu<double>(const double*, int64_t, int, const double*, double*);

}  // namespace difffit
