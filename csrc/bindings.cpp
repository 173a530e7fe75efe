// Thin pybind11 layer. It does not link libtorch: Python passes raw data addresses,
// sizes and (for CUDA) the stream as integers, after checking dtypes, devices, shapes and
// contiguity itself (python/difffit/ops.py). Here we only check what a wrong call could
// turn into a crash: null pointers and non-positive sizes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "difffit/kernels.h"

namespace py = pybind11;
using namespace difffit;

namespace {

// Device codes passed by python/difffit/ops.py. kCPUPointwise runs the CUDA kernels'
// per-placement code on the CPU (kernels.h; tests only).
enum Device { kCPU = 0, kCUDA = 1, kCPUPointwise = 2 };

template <typename T>
const T* cptr(uintptr_t p, const char* name) {
  if (p == 0) throw std::invalid_argument(std::string("difffit: null pointer for ") + name);
  return reinterpret_cast<const T*>(p);
}
template <typename T>
T* mptr(uintptr_t p, const char* name) {
  return const_cast<T*>(cptr<T>(p, name));
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("difffit: " + what);
}

// Each op's kernels, chosen by overloading on its argument struct.
template <typename T> void cpu_kernel(const ScoreArgs<T>& a) { score_cpu(a); }
template <typename T> void cpu_kernel(const StatsArgs<T>& a) { stats_cpu(a); }
template <typename T> void cpu_kernel(const SplatArgs<T>& a) { splat_cpu(a); }
template <typename T> void pointwise_kernel(const ScoreArgs<T>& a) { score_pointwise_cpu(a); }
template <typename T> void pointwise_kernel(const StatsArgs<T>& a) { stats_pointwise_cpu(a); }
template <typename T> void pointwise_kernel(const SplatArgs<T>&) {
  throw std::invalid_argument("difffit: splat has no per-point CPU path");
}
#ifdef DIFFFIT_WITH_CUDA
template <typename T> void cuda_kernel(const ScoreArgs<T>& a, void* s) { score_cuda(a, s); }
template <typename T> void cuda_kernel(const StatsArgs<T>& a, void* s) { stats_cuda(a, s); }
template <typename T> void cuda_kernel(const SplatArgs<T>& a, void* s) { splat_cuda(a, s); }
#endif

// Runs an op on its device: the CPU kernels without the GIL (they touch raw memory only),
// the CUDA kernels queued on `stream` (a cudaStream_t as an integer).
template <typename Args>
void run_on_device(int device, const Args& a, uintptr_t stream) {
  if (device == kCPU || device == kCPUPointwise) {
    py::gil_scoped_release nogil;
    if (device == kCPU)
      cpu_kernel(a);
    else
      pointwise_kernel(a);
    return;
  }
  require(device == kCUDA, "unknown device code " + std::to_string(device));
#ifdef DIFFFIT_WITH_CUDA
  cuda_kernel(a, reinterpret_cast<void*>(stream));
#else
  (void)stream;
  throw std::runtime_error(
      "difffit was built without CUDA kernels, so it cannot run on CUDA tensors. Rebuild "
      "with nvcc on PATH: DIFFFIT_CUDA=ON pip install --no-build-isolation --force-reinstall "
      "difffit (or run on the CPU with device='cpu').");
#endif
}

// Volume geometry as passed from Python: (nz, ny, nx, nc), origin xyz, voxel size xyz.
template <typename T>
VolumeView<T> volume(uintptr_t data, std::array<int64_t, 4> shape, std::array<double, 3> origin,
                     std::array<double, 3> voxel) {
  require(shape[0] > 0 && shape[1] > 0 && shape[2] > 0 && shape[3] > 0,
          "volume shape must be positive");
  require(shape[3] <= kMaxChannels,
          "volume has more than " + std::to_string(kMaxChannels) + " channels");
  require(shape[0] * shape[1] * shape[2] * shape[3] < (int64_t(1) << 31),
          "volume has 2^31 values or more; crop or downsample the map");
  for (double v : voxel) require(v > 0, "voxel size must be positive");
  VolumeView<T> v;
  v.data = cptr<T>(data, "volume");
  v.nz = int(shape[0]); v.ny = int(shape[1]); v.nx = int(shape[2]); v.nc = int(shape[3]);
  v.ox = T(origin[0]); v.oy = T(origin[1]); v.oz = T(origin[2]);
  v.ivx = T(1.0 / voxel[0]); v.ivy = T(1.0 / voxel[1]); v.ivz = T(1.0 / voxel[2]);
  return v;
}

template <typename T>
Placements<T> placements(uintptr_t quat, uintptr_t trans, uintptr_t mol_idx, int64_t n) {
  require(n >= 0, "number of placements must be >= 0");
  return Placements<T>{cptr<T>(quat, "quat"), cptr<T>(trans, "trans"),
                       cptr<int64_t>(mol_idx, "mol_idx"), n};
}

template <typename T>
void score(int device, uintptr_t vol, std::array<int64_t, 4> shape, std::array<double, 3> origin,
           std::array<double, 3> voxel, uintptr_t weights, uintptr_t points, uintptr_t offsets,
           int64_t n_mol, uintptr_t quat, uintptr_t trans, uintptr_t mol_idx, int64_t n_place,
           uintptr_t out_score, uintptr_t out_grad_q, uintptr_t out_grad_t, uintptr_t stream) {
  if (n_place == 0) return;  // empty tensors may have null data pointers
  ScoreArgs<T> a;
  a.vol = volume<T>(vol, shape, origin, voxel);
  a.weights = cptr<T>(weights, "weights");
  a.points = cptr<T>(points, "points");
  a.offsets = cptr<int64_t>(offsets, "offsets");
  a.n_mol = n_mol;
  a.place = placements<T>(quat, trans, mol_idx, n_place);
  a.score = mptr<T>(out_score, "score");
  // Both gradient outputs null: the score only (a scan), on the CPU kernels.
  const bool grads = out_grad_q != 0 || out_grad_t != 0;
  require(grads || device == kCPU, "score: gradient outputs are required on this device");
  a.grad_q = grads ? mptr<T>(out_grad_q, "grad_q") : nullptr;
  a.grad_t = grads ? mptr<T>(out_grad_t, "grad_t") : nullptr;
  run_on_device(device, a, stream);
}

// CPU only: CUDA volumes are summed by torch (a matrix-vector product on the GPU).
template <typename T>
void channel_sum(uintptr_t vol, int64_t n_voxels, int nc, uintptr_t weights, uintptr_t out) {
  require(n_voxels > 0 && nc > 0 && nc <= kMaxChannels, "channel_sum: bad volume size");
  const T* v = cptr<T>(vol, "volume");
  const T* w = cptr<T>(weights, "weights");
  T* o = mptr<T>(out, "out");
  py::gil_scoped_release nogil;
  channel_sum_cpu<T>(v, n_voxels, nc, w, o);
}

template <typename T>
void stats(int device, uintptr_t vol, std::array<int64_t, 4> shape, std::array<double, 3> origin,
           std::array<double, 3> voxel, int channel, double threshold, uintptr_t points,
           uintptr_t point_weights, uintptr_t offsets, int64_t n_mol, uintptr_t quat,
           uintptr_t trans, uintptr_t mol_idx, int64_t n_place, uintptr_t out_stats,
           uintptr_t stream) {
  if (n_place == 0) return;  // empty tensors may have null data pointers
  StatsArgs<T> a;
  a.vol = volume<T>(vol, shape, origin, voxel);
  require(channel >= 0 && channel < shape[3], "channel out of range");
  a.channel = channel;
  a.threshold = T(threshold);
  a.points = cptr<T>(points, "points");
  a.point_weights = cptr<T>(point_weights, "point_weights");
  a.offsets = cptr<int64_t>(offsets, "offsets");
  a.n_mol = n_mol;
  a.place = placements<T>(quat, trans, mol_idx, n_place);
  a.stats = mptr<T>(out_stats, "stats");
  run_on_device(device, a, stream);
}

template <typename T>
void splat(int device, uintptr_t points, uintptr_t amplitudes, int64_t n_points, double sigma,
           double cutoff, uintptr_t grid, std::array<int64_t, 3> shape,
           std::array<double, 3> origin, std::array<double, 3> voxel, uintptr_t stream) {
  require(sigma > 0, "sigma must be positive");
  require(cutoff > 0, "cutoff must be positive");
  require(shape[0] > 0 && shape[1] > 0 && shape[2] > 0, "grid shape must be positive");
  for (double v : voxel) require(v > 0, "voxel size must be positive");
  SplatArgs<T> a;
  a.n_points = n_points;
  a.sigma = T(sigma);
  a.cutoff = T(cutoff);
  a.grid = mptr<T>(grid, "grid");
  a.nz = int(shape[0]); a.ny = int(shape[1]); a.nx = int(shape[2]);
  a.ox = T(origin[0]); a.oy = T(origin[1]); a.oz = T(origin[2]);
  a.vx = T(voxel[0]); a.vy = T(voxel[1]); a.vz = T(voxel[2]);
  if (n_points == 0) return;
  a.points = cptr<T>(points, "points");
  a.amplitudes = cptr<T>(amplitudes, "amplitudes");
  run_on_device(device, a, stream);
}

// CPU only. Returns (world coordinates [K, 3] float64, values [K], counts [n_mol] int64),
// the structures' envelopes one after another.
template <typename T>
py::tuple envelopes(uintptr_t points, uintptr_t amplitudes, uintptr_t offsets, int64_t n_mol,
                    uintptr_t grids, uintptr_t frames, double sigma, double cutoff,
                    double fraction) {
  require(sigma > 0, "sigma must be positive");
  require(cutoff > 0, "cutoff must be positive");
  require(n_mol >= 0, "n_mol must not be negative");
  EnvelopeArgs<T> a;
  a.offsets = cptr<int64_t>(offsets, "offsets");
  a.grids = cptr<double>(grids, "grids");
  a.frames = cptr<double>(frames, "frames");
  for (int64_t m = 0; m < n_mol; ++m) {
    const double* g = a.grids + 7 * m;
    require(g[3] > 0 && g[4] >= 1 && g[5] >= 1 && g[6] >= 1, "envelope grid must be positive");
    require(a.offsets[m + 1] >= a.offsets[m], "offsets must not decrease");
  }
  const bool any = n_mol > 0 && a.offsets[n_mol] > 0;  // empty tensors may have null data
  a.points = any ? cptr<T>(points, "points") : nullptr;
  a.amplitudes = any ? cptr<T>(amplitudes, "amplitudes") : nullptr;
  a.n_mol = n_mol;
  a.sigma = T(sigma);
  a.cutoff = T(cutoff);
  a.fraction = fraction;
  std::vector<std::vector<double>> coords;
  std::vector<std::vector<T>> value;
  {
    py::gil_scoped_release nogil;
    envelopes_cpu(a, coords, value);
  }
  py::ssize_t total = 0;
  for (const auto& v : value) total += py::ssize_t(v.size());
  py::array_t<double> xyz({total, py::ssize_t(3)});
  py::array_t<T> val(total);
  py::array_t<int64_t> counts(n_mol);
  double* xp = xyz.mutable_data();
  T* vp = val.mutable_data();
  int64_t* cp = counts.mutable_data();
  for (int64_t m = 0; m < n_mol; ++m) {
    cp[m] = int64_t(value[m].size());
    xp = std::copy(coords[m].begin(), coords[m].end(), xp);
    vp = std::copy(value[m].begin(), value[m].end(), vp);
  }
  return py::make_tuple(xyz, val, counts);
}

// CPU only: k-means steps of many point sets; centres and labels are updated in place.
void kmeans(uintptr_t points, uintptr_t offsets, int64_t n_sets, uintptr_t centres,
            uintptr_t centre_offsets, int iters, uintptr_t labels) {
  require(n_sets >= 0 && iters >= 0, "kmeans: n_sets and iters must not be negative");
  KmeansArgs a;
  a.offsets = cptr<int64_t>(offsets, "offsets");
  a.centre_offsets = cptr<int64_t>(centre_offsets, "centre_offsets");
  for (int64_t m = 0; m < n_sets; ++m) {
    const int64_t n = a.offsets[m + 1] - a.offsets[m];
    const int64_t k = a.centre_offsets[m + 1] - a.centre_offsets[m];
    require(k >= 1 && k <= n, "kmeans: every set needs between 1 and its point count of centres");
  }
  if (n_sets == 0) return;
  a.points = cptr<double>(points, "points");
  a.centres = mptr<double>(centres, "centres");
  a.labels = mptr<int64_t>(labels, "labels");
  a.n_sets = n_sets;
  a.iters = iters;
  py::gil_scoped_release nogil;
  kmeans_cpu(a);
}

py::dict build_info() {
  py::dict d;
#ifdef DIFFFIT_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = DIFFFIT_CUDA_VERSION;
  d["cuda_architectures"] = DIFFFIT_CUDA_ARCHS;
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_architectures"] = py::none();
#endif
#ifdef _OPENMP
  d["openmp"] = true;
  d["openmp_version"] = int(_OPENMP);
#else
  d["openmp"] = false;
  d["openmp_version"] = py::none();
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#elif defined(_MSC_VER)
  d["compiler"] = std::string("msvc ") + std::to_string(_MSC_VER);
#else
  d["compiler"] = std::string("unknown");
#endif
  // Constants of the kernels that python/difffit/ops.py needs.
  d["num_stats"] = kNumStats;
  d["max_channels"] = kMaxChannels;
  d["cpu_variant"] = std::string(cpu_variant());
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "difffit compiled kernels (raw-pointer interface; use difffit.ops instead)";
  m.def("build_info", &build_info);
  m.def("score_f32", &score<float>);
  m.def("score_f64", &score<double>);
  m.def("channel_sum_f32", &channel_sum<float>);
  m.def("channel_sum_f64", &channel_sum<double>);
  m.def("stats_f32", &stats<float>);
  m.def("stats_f64", &stats<double>);
  m.def("splat_f32", &splat<float>);
  m.def("splat_f64", &splat<double>);
  m.def("envelopes_f32", &envelopes<float>);
  m.def("envelopes_f64", &envelopes<double>);
  m.def("kmeans", &kmeans);
}
