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
// Work split: the output is cut into (panel range, row range) items (gemm.h's Split), run after the packing of
// x as two phases of parallel.h's ParallelPhases (the calling thread and pool tasks claim items from shared
// counters, so the call never waits on a pool thread that has not started). Within an item the loop is
// panel-outer, row-tile-inner: a panel (K * 64 bytes) is read from DRAM once and reused from L1/L2 by every
// row tile. A weight small enough to stay in L2 runs row-tile-outer instead (each item packs its own tiles).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace gasp::gemm;  // kNB, kMR, kTiles, PackTile

struct Problem {
  const float* x;      // [M, K]
  float* xt;           // x packed in row tiles (tile t, rows t*kMR..., is [K, rows] k-major); null: per item
  const float* w;      // [P, K, NB]
  float* y;            // [M, N]
  int64_t M, K, N, P;
  Split split;
};

void RunItem(const Problem& p, int64_t item) {
  const int64_t p0 = p.split.Panel0(item), p1 = std::min(p.P, p0 + p.split.panels_per_item);
  const int64_t t0 = p.split.Tile0(item), t1 = std::min((p.M + kMR - 1) / kMR, t0 + p.split.tiles_per_item);
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
  const int64_t want = ItemsWanted(threads);
  const bool weights_in_l2 = P * K * kNB * int64_t{sizeof(float)} <= kL2WeightBytes;
  // Prefill through a small weight (a narrow projection): split rows only, every item packs its own row tiles
  // and runs them over all panels from L2, so x is read once and never written back packed. Otherwise panel
  // ranges, x packed up front (phase 0) into a per-thread buffer that only grows (to the largest M * K this
  // thread has run): a fresh allocation per call costs page faults worth as much as the packing itself.
  const bool rows_only = tiles >= want && weights_in_l2;
  float* xt = nullptr;
  if (!rows_only) {
    static thread_local std::vector<float> packed_x;
    if (static_cast<int64_t>(packed_x.size()) < M * K) packed_x.resize(M * K);
    xt = packed_x.data();
  }
  const Problem prob{x.typed_data(), xt, w.typed_data(), y->typed_data(), M, K, N, P,
                     Split(P, tiles, want, rows_only ? P : 0)};
  // Tiny products (a few microseconds of work) are not worth a pool round trip.
  const bool parallel = 2 * M * K * N >= (int64_t{1} << 21);
  gasp::ParallelPhases(pool, {xt ? tiles : 0, prob.split.items}, parallel, [&prob](int phase, int64_t i) {
    if (phase == 0) return PackTile(prob.x, prob.M, prob.K, i, prob.xt + i * kMR * prob.K);
    RunItem(prob, i);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaspPackedGemm, PackedGemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
