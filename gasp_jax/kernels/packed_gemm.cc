// fp32 y[M, N] = x[M, K] @ W for XLA:CPU, with W packed once into column panels (see cpu_gemm.py).
//
// XLA:CPU's Eigen dot re-packs the weight operand on every call; at decode shapes (M = a few rows) that
// repacking plus the strided weight reads dominate. Here W arrives as [P, K, NB] (P = ceil(N / NB) panels of
// NB = 16 columns, zero-padded): one panel is one contiguous stream that the hardware prefetcher follows, and a
// panel row (16 floats) is one 64-byte line = one AVX-512 register.
//
// x is packed per call into row tiles of kMR rows, k-major, so the microkernel's broadcasts come from one
// cache line per k (x is small next to W at decode; at prefill the packing is ~1 / (2 * panels) of the work).
//
// Work split: the output is cut into (panel range, row range) items; the calling thread and the tasks it
// schedules on XLA's intra-op pool claim items from a shared atomic counter, so the call never waits on a
// pool thread that has not started (with no pool, the caller does every item). Within an item the loop is
// panel-outer, row-tile-inner: a panel (K * 64 bytes) is read from DRAM once and reused from L1/L2 by every
// row tile. A weight small enough to stay in L2 runs row-tile-outer instead (each item packs its own tiles).

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
// A weight up to this size stays in a core's L2 (1 MiB on Zen 4) while row tiles stream past it.
constexpr int64_t kL2WeightBytes = 512 << 10;

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
  const float* x;      // [M, K]
  float* xt;           // x packed in row tiles (tile t, rows t*kMR..., is [K, rows] k-major); null: per item
  const float* w;      // [P, K, NB]
  float* y;            // [M, N]
  int64_t M, K, N, P;
  int64_t panels_per_item, tiles_per_item, row_items;
};

#if defined(__AVX512F__)
// In-register transpose of a 16 x 16 block (row i of the input becomes lane i of every output row).
inline void Transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
}
#endif

// Packs row tile t of x k-major, so the microkernel's broadcasts are consecutive floats of one cache line.
// (Broadcasting from x in place reads kMR rows K floats apart; at K a multiple of 1024 they share one L1
// set and evict each other: 1024 x 2048 x 512 ran at half speed.)
void PackTile(const float* x, int64_t M, int64_t K, int64_t t, float* dst) {
  const int64_t r0 = t * kMR;
  const int64_t rows = std::min<int64_t>(kMR, M - r0);
  const float* src = x + r0 * K;
  int64_t k = 0;
#if defined(__AVX512F__)
  if (rows == 16) {  // 16 x 16 blocks through registers: ~8x fewer instructions than element by element
    for (; k + 16 <= K; k += 16) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * K + k);
      Transpose16(r);
      for (int j = 0; j < 16; ++j) _mm512_storeu_ps(dst + (k + j) * 16, r[j]);
    }
  }
#endif
  for (; k < K; ++k)  // contiguous writes; the reads are `rows` sequential streams
    for (int64_t i = 0; i < rows; ++i) dst[k * rows + i] = src[i * K + k];
}

void RunItem(const Problem& p, int64_t item) {
  const int64_t p0 = (item / p.row_items) * p.panels_per_item;
  const int64_t p1 = std::min(p.P, p0 + p.panels_per_item);
  const int64_t t0 = (item % p.row_items) * p.tiles_per_item;
  const int64_t t1 = std::min((p.M + kMR - 1) / kMR, t0 + p.tiles_per_item);
  if (p.xt == nullptr) {  // every panel stays in L2: tile-outer, each tile packed here into L1/L2
    static thread_local std::vector<float> tile;
    if (static_cast<int64_t>(tile.size()) < kMR * p.K) tile.resize(kMR * p.K);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t rows = std::min<int64_t>(kMR, p.M - t * kMR);
      PackTile(p.x, p.M, p.K, t, tile.data());
      for (int64_t j = p0; j < p1; ++j)
        kTiles[rows - 1](tile.data(), p.w + j * p.K * kNB, p.K, p.y + t * kMR * p.N + j * kNB, p.N,
                         std::min(kNB, p.N - j * kNB));
    }
    return;
  }
  // Panel-outer: each panel is read from DRAM once and reused from L1/L2 by the item's row tiles.
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
// Two phases, each claimed item by item: pack x's row tiles (unless the items pack their own), then, once
// every tile is packed, the products.
struct Job {
  Problem problem;
  int64_t tiles, items;
  std::atomic<int64_t> next_tile{0}, packed{0}, next{0}, done{0};

  void Work() {
    int64_t finished = 0;
    for (int64_t t; (t = next_tile.fetch_add(1, std::memory_order_relaxed)) < tiles; ++finished)
      PackTile(problem.x, problem.M, problem.K, t, problem.xt + t * kMR * problem.K);
    if (finished) packed.fetch_add(finished, std::memory_order_acq_rel);
    while (packed.load(std::memory_order_acquire) < tiles) std::this_thread::yield();
    finished = 0;
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items; ++finished) RunItem(problem, i);
    if (finished) done.fetch_add(finished, std::memory_order_acq_rel);
  }
};

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

  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t tiles = (M + kMR - 1) / kMR;
  const int64_t want = threads == 1 ? 1 : 8 * threads;  // items: an uneven start or a busy core evens out
  Problem prob{x.typed_data(), nullptr, w.typed_data(), y->typed_data(), M, K, N, P, 0, 0, 0};
  const bool weights_in_l2 = P * K * kNB * int64_t{sizeof(float)} <= kL2WeightBytes;
  if (tiles >= want && weights_in_l2) {
    // Prefill through a small weight (a narrow projection): split rows only, every item packs its own row
    // tiles and runs them over all panels from L2, so x is read once and never written back packed.
    prob.panels_per_item = P;
    prob.tiles_per_item = (tiles + want - 1) / want;
  } else {
    // Panel ranges (rows split too only when there are fewer panels than items), x packed up front.
    // The packed copy lives in a per-thread buffer that only grows (to the largest M * K this thread has
    // run): a fresh allocation per call costs page faults worth as much as the packing itself.
    static thread_local std::vector<float> packed_x;
    if (static_cast<int64_t>(packed_x.size()) < M * K) packed_x.resize(M * K);
    prob.xt = packed_x.data();
    prob.panels_per_item = std::max<int64_t>(1, (P + want - 1) / want);
    const int64_t panel_items = (P + prob.panels_per_item - 1) / prob.panels_per_item;
    const int64_t row_split = std::min(tiles, std::max<int64_t>(1, want / panel_items));
    prob.tiles_per_item = (tiles + row_split - 1) / row_split;
  }
  prob.row_items = (tiles + prob.tiles_per_item - 1) / prob.tiles_per_item;

  auto job = std::make_shared<Job>();
  job->problem = prob;
  job->tiles = prob.xt ? tiles : 0;
  job->items = (P + prob.panels_per_item - 1) / prob.panels_per_item * prob.row_items;
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
