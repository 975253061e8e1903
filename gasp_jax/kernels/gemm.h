// The packed-weight GEMM's pieces that packed_gemm.cc and decoder_layer.cc share: the panel layout, the
// microkernel (one row tile against one column panel) and the k-major packing of x's row tiles. Header-only;
// see packed_gemm.cc for the layout and the reasons behind each choice.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

namespace gasp::gemm {

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

// Items a product is cut into: 8 per thread, so an uneven start or a busy core evens out.
inline int64_t ItemsWanted(int64_t threads) { return threads == 1 ? 1 : 8 * threads; }

// A product of `tiles` row tiles by P column panels cut into items of (panel range, row-tile range): panel
// ranges first, rows split too only when there are fewer panel ranges than items wanted. Item i covers
// panels [Panel0(i), +panels_per_item) and tiles [Tile0(i), +tiles_per_item), both clipped at the end.
struct Split {
  int64_t panels_per_item, tiles_per_item, row_items, items;

  Split(int64_t P, int64_t tiles, int64_t want, int64_t panels_each = 0) {
    panels_per_item = panels_each ? panels_each : std::max<int64_t>(1, (P + want - 1) / want);
    const int64_t panel_items = (P + panels_per_item - 1) / panels_per_item;
    const int64_t row_split = std::min(tiles, std::max<int64_t>(1, want / panel_items));
    tiles_per_item = panels_each ? (tiles + want - 1) / want : (tiles + row_split - 1) / row_split;
    row_items = (tiles + tiles_per_item - 1) / tiles_per_item;
    items = panel_items * row_items;
  }
  int64_t Panel0(int64_t item) const { return (item / row_items) * panels_per_item; }
  int64_t Tile0(int64_t item) const { return (item % row_items) * tiles_per_item; }
};

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
inline void PackTile(const float* x, int64_t M, int64_t K, int64_t t, float* dst) {
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

}  // namespace gasp::gemm
