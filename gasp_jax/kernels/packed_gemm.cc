// fp32 y[M, N] = x[M, K] @ W for XLA:CPU, with W packed once into column panels (see cpu_gemm.py).
//
// XLA:CPU's Eigen dot re-packs the weight operand on every call; at decode shapes (M = a few rows) that
// repacking plus the strided weight reads dominate. Here W arrives as [P, K, NB] (P = ceil(N / NB) panels of
// NB = 16 columns, zero-padded): one panel is one contiguous stream that the hardware prefetcher follows, and a
// panel row (16 floats) is one 64-byte line = one AVX-512 register.
//
// Work split: the output is cut into (panel range, row range) items; the calling thread and the tasks it
// schedules on XLA's intra-op pool claim items from a shared atomic counter, so the call never waits on a
// pool thread that has not started (with no pool, the caller does every item). Within an item the loop is
// panel-outer, row-tile-inner: a panel (K * 64 bytes) is read from DRAM once and reused from L1/L2 by every
// row tile, while x (small at decode, L2/L3-resident at prefill) is re-read per panel.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kNB = 16;  // panel width: must match cpu_gemm.PANEL

// One SIMD register of floats, and the three operations the microkernel needs.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
constexpr int kMR = 16;  // 16 accumulators of 32: room for the weight vector and broadcasts
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vfma(float a, Vec b, Vec c) { return _mm512_fmadd_ps(_mm512_set1_ps(a), b, c); }
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kMR = 6;  // 6 rows x 2 vectors = 12 accumulators of 16 registers
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vfma(float a, Vec b, Vec c) { return _mm256_fmadd_ps(_mm256_set1_ps(a), b, c); }
#else  // any other gcc/clang target (SSE, NEON): 4-lane vector extensions
typedef float Vec __attribute__((vector_size(16)));
constexpr int kLanes = 4;
constexpr int kMR = 4;
inline Vec vzero() { return Vec{0.f, 0.f, 0.f, 0.f}; }
inline Vec vload(const float* p) { Vec v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void vstore(float* p, Vec v) { std::memcpy(p, &v, sizeof(v)); }
inline Vec vfma(float a, Vec b, Vec c) { return c + a * b; }
#endif

constexpr int kNV = kNB / kLanes;  // vectors per panel row
// Software prefetch 4 KiB ahead in the weight stream (it runs on into the next panel, which is contiguous):
// one core alone does not keep enough DRAM reads in flight otherwise (8x512 chain at M=16 on one core:
// 20.3 -> 16.1 ms). Harmless where the panel is already in L1/L2 (the second and later row tiles).
constexpr int64_t kPrefetchRows = 64;

// y[0:MR, 0:ncols] = xt @ panel, where xt is the row tile packed k-major ([K, MR]) and panel is [K, NB].
// Small tiles would be bound by the FMA latency chain of too few accumulators, so they keep KU independent
// partial sums over interleaved k and add them at the end.
template <int MR>
void Tile(const float* __restrict xt, const float* __restrict panel, int64_t K, float* __restrict y,
          int64_t ldy, int64_t ncols) {
  constexpr int kAcc = MR * kNV;
  constexpr int KU = kAcc >= 8 ? 1 : (kAcc >= 4 ? 2 : 4);
  Vec acc[KU][MR][kNV];
  for (int u = 0; u < KU; ++u)
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < kNV; ++v) acc[u][i][v] = vzero();
  int64_t k = 0;
  for (; k + KU <= K; k += KU) {
    for (int u = 0; u < KU; ++u) {
      const float* w = panel + (k + u) * kNB;
      const float* a = xt + (k + u) * MR;
      __builtin_prefetch(w + kPrefetchRows * kNB);
      Vec wv[kNV];
      for (int v = 0; v < kNV; ++v) wv[v] = vload(w + v * kLanes);
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < kNV; ++v) acc[u][i][v] = vfma(a[i], wv[v], acc[u][i][v]);
    }
  }
  for (; k < K; ++k) {
    const float* w = panel + k * kNB;
    const float* a = xt + k * MR;
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < kNV; ++v) acc[0][i][v] = vfma(a[i], vload(w + v * kLanes), acc[0][i][v]);
  }
  for (int u = 1; u < KU; ++u)
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < kNV; ++v) acc[0][i][v] += acc[u][i][v];
  for (int i = 0; i < MR; ++i) {
    if (ncols == kNB) {
      for (int v = 0; v < kNV; ++v) vstore(y + i * ldy + v * kLanes, acc[0][i][v]);
    } else {  // the last, zero-padded panel: only the real columns exist in y
      alignas(64) float row[kNB];
      for (int v = 0; v < kNV; ++v) vstore(row + v * kLanes, acc[0][i][v]);
      std::memcpy(y + i * ldy, row, ncols * sizeof(float));
    }
  }
}

using TileFn = void (*)(const float*, const float*, int64_t, float*, int64_t, int64_t);

template <int... MRs>
constexpr auto MakeTiles(std::integer_sequence<int, MRs...>) {
  return std::array<TileFn, sizeof...(MRs)>{&Tile<MRs + 1>...};
}
// kTiles[r - 1] handles a tile of r rows (the last tile of an M that is not a multiple of kMR).
constexpr auto kTiles = MakeTiles(std::make_integer_sequence<int, kMR>{});

struct Problem {
  const float* xt;     // x packed in row tiles: tile t (rows t*kMR ...) is [K, rows] k-major
  const float* w;      // [P, K, NB]
  float* y;            // [M, N]
  int64_t M, K, N, P;
  int64_t panels_per_item, tiles_per_item, row_items;
};

void RunItem(const Problem& p, int64_t item) {
  const int64_t p0 = (item / p.row_items) * p.panels_per_item;
  const int64_t p1 = std::min(p.P, p0 + p.panels_per_item);
  const int64_t t0 = (item % p.row_items) * p.tiles_per_item;
  const int64_t t1 = std::min((p.M + kMR - 1) / kMR, t0 + p.tiles_per_item);
  for (int64_t j = p0; j < p1; ++j) {
    const float* panel = p.w + j * p.K * kNB;
    const int64_t ncols = std::min(kNB, p.N - j * kNB);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r0 = t * kMR;
      const int64_t rows = std::min<int64_t>(kMR, p.M - r0);
      kTiles[rows - 1](p.xt + r0 * p.K, panel, p.K, p.y + r0 * p.N + j * kNB, p.N, ncols);
    }
  }
}

// Shared by the caller and its pool tasks; a task may start after the call returned, so it holds a reference.
struct Job {
  Problem problem;
  int64_t items;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Work() {
    int64_t finished = 0;
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items; ++finished) RunItem(problem, i);
    if (finished) done.fetch_add(finished, std::memory_order_acq_rel);
  }
};

// Pack x row tiles k-major so the microkernel broadcasts consecutive floats of one cache line.
void PackRows(const float* x, int64_t M, int64_t K, float* xt) {
  for (int64_t r0 = 0; r0 < M; r0 += kMR) {
    const int64_t rows = std::min<int64_t>(kMR, M - r0);
    float* dst = xt + r0 * K;
    for (int64_t i = 0; i < rows; ++i) {
      const float* src = x + (r0 + i) * K;
      for (int64_t k = 0; k < K; ++k) dst[k * rows + i] = src[k];
    }
  }
}

ffi::Error PackedGemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                      ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  const auto yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || yd.size() != 2 || wd[2] != kNB)
    return ffi::Error::InvalidArgument("packed_gemm: want x [M, K], w [P, K, 16], y [M, N]");
  const int64_t M = xd[0], K = xd[1], N = yd[1], P = wd[0];
  if (wd[1] != K || yd[0] != M || P != (N + kNB - 1) / kNB)
    return ffi::Error::InvalidArgument("packed_gemm: x, packed w and y shapes disagree");
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (K == 0) {
    std::memset(y->typed_data(), 0, M * N * sizeof(float));
    return ffi::Error::Success();
  }

  // Small x (decode) lives in a reused per-thread buffer: no allocation, no page faults per call.
  static thread_local std::vector<float> reused;
  std::unique_ptr<float[]> large;
  float* xt;
  if (M * K <= (int64_t{1} << 20)) {
    if (static_cast<int64_t>(reused.size()) < M * K) reused.resize(M * K);
    xt = reused.data();
  } else {
    large.reset(new float[M * K]);
    xt = large.get();
  }
  PackRows(x.typed_data(), M, K, xt);

  // Items: ~8 per thread so an uneven start or a busy core evens out; rows are split only when there are
  // too few panels to keep every thread busy (prefill through a narrow projection).
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t tiles = (M + kMR - 1) / kMR;
  const int64_t want = threads == 1 ? 1 : 8 * threads;
  Problem prob{xt, w.typed_data(), y->typed_data(), M, K, N, P, 0, 0, 0};
  prob.panels_per_item = std::max<int64_t>(1, (P + want - 1) / want);
  const int64_t panel_items = (P + prob.panels_per_item - 1) / prob.panels_per_item;
  prob.row_items = std::min(tiles, std::max<int64_t>(1, want / panel_items));
  prob.tiles_per_item = (tiles + prob.row_items - 1) / prob.row_items;
  prob.row_items = (tiles + prob.tiles_per_item - 1) / prob.tiles_per_item;

  auto job = std::make_shared<Job>();
  job->problem = prob;
  job->items = panel_items * prob.row_items;
  // Tiny products (a few microseconds of work) are not worth a pool round trip.
  const bool parallel = threads > 1 && job->items > 1 && 2 * M * K * N >= (int64_t{1} << 21);
  if (parallel)
    for (int64_t t = 0; t < std::min(threads, job->items) - 1; ++t) pool.Schedule([job] { job->Work(); });
  job->Work();
  while (job->done.load(std::memory_order_acquire) < job->items) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaspPackedGemm, PackedGemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
