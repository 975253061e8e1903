// One decoder layer of the packed CPU decode model in one call (cpu_layer.py): pre-norm attention with the KV
// cache write, then the pre-norm SwiGLU MLP, both with their residuals, as models/transformer.py's DecoderLayer.
//
// Run as separate ops, a decode step's layer is four GEMM calls, an attention call and ~15 small XLA ops (norms,
// bias, RoPE, the cache scatter, SiLU, residual adds); each call wakes XLA's pool and each op is a pass over
// memory (at 8 layers x 512 one call here cut the peer benchmark's decode time by ~8%). Here one call runs the
// layer as ten phases over one team of threads (parallel.h's ParallelPhases), folding the small ops into the
// phases around the GEMMs:
//   0 RMSNorm(x) packed into the GEMM's row tiles    5 o-proj GEMM + residual x           -> x1
//   1 q|k|v GEMM + bias                  -> qkv      6 RMSNorm(x1) packed into row tiles
//   2 q/k norm (Qwen3), RoPE; k, v into the cache    7 gate|up GEMM, SiLU(gate) * up      -> h
//   3 attention over each query's kept slots -> a    8 h packed into row tiles
//   4 a packed into row tiles                        9 down GEMM + residual x1            -> out
// The gate|up weight interleaves its gate and up panels (panel 2j: gate columns 16j.., 2j + 1: the same up
// columns), so one item holds both halves of its output columns. Cache slots are written as XLA's
// dynamic_update_slice does: row b's T tokens at slots clamp(index[b], 0, S - T) + t.
//
// A query whose mask keeps no slot (a prompt's left padding, an idle decode slot) is skipped: its output is its
// input and it writes no cache slot. Nothing reads either (its own slot is masked out with the rest), and the
// phases run over the other queries only, gathered into consecutive rows (phase 0), so padding costs no GEMM
// rows; an eleventh phase then writes every output row (the live rows' results, x for the others).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "attention.h"
#include "gemm.h"
#include "parallel.h"
#include "vec16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

namespace gm = gasp::gemm;
using gasp::V16;

// One projection y = xt @ W (+ an epilogue) cut into (panel range, row-tile range) items, as packed_gemm.cc.
struct Gemm {
  enum Epilogue { kBias, kResidual, kSwiGlu };
  const float* xt;     // x's row tiles, packed (gm::PackTile)
  const float* w;      // [P, K, 16]; kSwiGlu: [2 P, K, 16], gate and up panels interleaved
  float* y;            // [M, N]
  const float* extra;  // kBias: bias [N]; kResidual: r [M, N] (y = r + xt @ W)
  Epilogue epilogue;
  int64_t M, K, N, P;  // P: output panels (panel pairs for kSwiGlu)
  gm::Split split;

  Gemm(const float* xt_, const float* w_, float* y_, const float* extra_, Epilogue e, int64_t M_, int64_t K_,
       int64_t N_, int64_t threads)
      : xt(xt_), w(w_), y(y_), extra(extra_), epilogue(e), M(M_), K(K_), N(N_), P((N_ + gm::kNB - 1) / gm::kNB),
        split(P, (M + gm::kMR - 1) / gm::kMR, gm::ItemsWanted(threads)) {}

  void Run(int64_t item) const {
    const int64_t p0 = split.Panel0(item), p1 = std::min(P, p0 + split.panels_per_item);
    const int64_t t0 = split.Tile0(item), t1 = std::min((M + gm::kMR - 1) / gm::kMR, t0 + split.tiles_per_item);
    for (int64_t j = p0; j < p1; ++j) {
      const int64_t c0 = j * gm::kNB, ncols = std::min(gm::kNB, N - c0);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * gm::kMR, rows = std::min<int64_t>(gm::kMR, M - r0);
        const float* tile = xt + r0 * K;
        float* out = y + r0 * N + c0;
        if (epilogue == kSwiGlu) {
          alignas(64) float gate[gm::kMR * gm::kNB], up[gm::kMR * gm::kNB];
          gm::kTiles[rows - 1](tile, w + 2 * j * K * gm::kNB, K, gate, gm::kNB, gm::kNB);
          gm::kTiles[rows - 1](tile, w + (2 * j + 1) * K * gm::kNB, K, up, gm::kNB, gm::kNB);
          for (int64_t i = 0; i < rows; ++i) {
            const V16 g = gasp::Load(gate + i * gm::kNB);
            const V16 e = gasp::Exp(g > 0 ? -g : g);  // sigmoid(g) from exp(-|g|): no overflow either side
            const V16 sig = g > 0 ? 1.f / (1.f + e) : e / (1.f + e);
            alignas(64) float row[gm::kNB];
            gasp::Store(row, g * sig * gasp::Load(up + i * gm::kNB));
            std::memcpy(out + i * N, row, ncols * sizeof(float));
          }
          continue;
        }
        gm::kTiles[rows - 1](tile, w + j * K * gm::kNB, K, out, N, ncols);
        for (int64_t i = 0; i < rows; ++i) {
          const float* add = epilogue == kBias ? extra + c0 : extra + (r0 + i) * N + c0;
          for (int64_t c = 0; c < ncols; ++c) out[i * N + c] += add[c];
        }
      }
    }
  }
};

// RMSNorm of rows [r0, r0 + rows) of x [M, E] (as transformer.RMSNorm: x / rms(x), then times scale) into dst.
void NormRows(const float* x, const float* scale, float eps, int64_t rows, int64_t E, float* dst) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = x + i * E;
    V16 acc = V16{};
    int64_t e = 0;
    for (; e + gasp::kLanes <= E; e += gasp::kLanes) acc += gasp::Load(row + e) * gasp::Load(row + e);
    float ss = gasp::Sum(acc);
    for (; e < E; ++e) ss += row[e] * row[e];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(E) + eps);
    for (e = 0; e < E; ++e) dst[i * E + e] = scale[e] * (row[e] * inv);
  }
}

// Row tile t of x [M, E] normalized (scale != null) or as is, packed k-major for the GEMM at xt + t * kMR * E.
void NormPackTile(const float* x, const float* scale, float eps, int64_t M, int64_t E, int64_t t, float* xt) {
  if (scale == nullptr) {
    gm::PackTile(x, M, E, t, xt + t * gm::kMR * E);
    return;
  }
  static thread_local std::vector<float> normed;
  const int64_t r0 = t * gm::kMR, rows = std::min<int64_t>(gm::kMR, M - r0);
  if (static_cast<int64_t>(normed.size()) < rows * E) normed.resize(rows * E);
  NormRows(x + r0 * E, scale, eps, rows, E, normed.data());
  gm::PackTile(normed.data(), rows, E, 0, xt + t * gm::kMR * E);
}

// In place: RMSNorm over D with `scale` (q/k norm, when given), then RoPE (HF's rotate-half) by cos, sin [D / 2].
void NormRope(float* x, const float* scale, float eps, const float* cos, const float* sin, int64_t D) {
  if (scale != nullptr) NormRows(x, scale, eps, 1, D, x);
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

ffi::Error DecoderLayer(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> input_norm,
                        ffi::Buffer<ffi::F32> qkv_w, ffi::Buffer<ffi::F32> qkv_bias, ffi::Buffer<ffi::F32> qk_norm,
                        ffi::Buffer<ffi::F32> o_w, ffi::Buffer<ffi::F32> post_norm, ffi::Buffer<ffi::F32> gate_up_w,
                        ffi::Buffer<ffi::F32> down_w, ffi::Buffer<ffi::F32> cos, ffi::Buffer<ffi::F32> sin,
                        ffi::Buffer<ffi::S32> index, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32>,
                        ffi::Buffer<ffi::F32>, ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> k_cache,
                        ffi::ResultBuffer<ffi::F32> v_cache, int64_t num_heads, float eps, bool use_qk_norm) {
  const auto xd = x.dimensions(), cd = k_cache->dimensions(), md = mask.dimensions();
  if (xd.size() != 3 || cd.size() != 4 || md.size() != 3)
    return ffi::Error::InvalidArgument("decoder_layer: want x [B, T, E], caches [B, K, S, D], mask [B, T, S]");
  const int64_t B = xd[0], T = xd[1], E = xd[2], K = cd[1], S = cd[2], D = cd[3], H = num_heads;
  const int64_t F = down_w.dimensions().size() == 3 ? down_w.dimensions()[1] : -1;  // -1: fails the check below
  const int64_t M = B * T, NQ = H * D, NQKV = (H + 2 * K) * D;
  auto panels = [](int64_t n) { return (n + gm::kNB - 1) / gm::kNB; };
  auto shaped = [](const auto& buf, std::initializer_list<int64_t> want) {
    const auto d = buf.dimensions();
    return d.size() == want.size() && std::equal(d.begin(), d.end(), want.begin());
  };
  if (cd[0] != B || K == 0 || H % K || D % 2 || T > S || !shaped(input_norm, {E}) || !shaped(post_norm, {E}) ||
      !shaped(qkv_w, {panels(NQKV), E, gm::kNB}) || !shaped(qkv_bias, {NQKV}) || !shaped(qk_norm, {2, D}) ||
      !shaped(o_w, {panels(E), NQ, gm::kNB}) || !shaped(gate_up_w, {2 * panels(F), E, gm::kNB}) ||
      !shaped(down_w, {panels(E), F, gm::kNB}) || !shaped(cos, {B, T, D / 2}) || !shaped(sin, {B, T, D / 2}) ||
      !shaped(index, {B}) || !shaped(mask, {B, T, S}) || !shaped(*v_cache, {B, K, S, D}) || !shaped(*out, {B, T, E}))
    return ffi::Error::InvalidArgument("decoder_layer: the weights, caches, rope tables and mask disagree in shape");
  if (M == 0) return ffi::Error::Success();

  // The live queries (any slot kept), in order: row i of every phase below is query live[i] = b * T + t.
  static thread_local std::vector<int32_t> live;
  live.clear();
  for (int64_t i = 0; i < M; ++i) {
    const bool* m = mask.typed_data() + i * S;
    if (std::find(m, m + S, true) != m + S) live.push_back(static_cast<int32_t>(i));
  }
  const int64_t L = static_cast<int64_t>(live.size());
  const int32_t* rows = live.data();  // the phases name it: `live` itself is another vector on a pool thread
  const bool all = L == M;  // then x is read and out written in place, no gather or scatter
  if (L == 0) {
    std::memcpy(out->typed_data(), x.typed_data(), M * E * sizeof(float));
    return ffi::Error::Success();
  }

  // Scratch, per calling thread, grown to the largest layer it has run (a fresh allocation per call costs page
  // faults): the packed row tiles, q|k|v, the attention output, x1, h, and (some rows skipped) the live rows
  // of x and of the output.
  static thread_local std::vector<float> scratch;
  const int64_t tile_floats = ((L + gm::kMR - 1) / gm::kMR) * gm::kMR * std::max({E, NQ, F});
  const int64_t need = tile_floats + L * (NQKV + NQ + E + F) + (all ? 0 : 2 * L * E);
  if (static_cast<int64_t>(scratch.size()) < need) scratch.resize(need);
  float* xt = scratch.data();
  float* qkv = xt + tile_floats;
  float* attn = qkv + L * NQKV;
  float* x1 = attn + L * NQ;
  float* h = x1 + L * E;
  float* xl = all ? x.typed_data() : h + L * F;   // x's live rows
  float* yl = all ? out->typed_data() : xl + L * E;  // the output's live rows

  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t tiles = (L + gm::kMR - 1) / gm::kMR;
  const Gemm qkv_gemm(xt, qkv_w.typed_data(), qkv, qkv_bias.typed_data(), Gemm::kBias, L, E, NQKV, threads);
  const Gemm o_gemm(xt, o_w.typed_data(), x1, xl, Gemm::kResidual, L, NQ, E, threads);
  const Gemm gate_up_gemm(xt, gate_up_w.typed_data(), h, nullptr, Gemm::kSwiGlu, L, E, F, threads);
  const Gemm down_gemm(xt, down_w.typed_data(), yl, x1, Gemm::kResidual, L, F, E, threads);
  const gasp::attention::Problem attend{qkv, k_cache->typed_data(), v_cache->typed_data(), mask.typed_data(),
                                        attn, B, T, H, K, S, D, NQKV, NQ, rows};
  const float* q_norm = use_qk_norm ? qk_norm.typed_data() : nullptr;
  const float* k_norm = use_qk_norm ? qk_norm.typed_data() + D : nullptr;

  auto phase = [&](int p, int64_t i) {
    switch (p) {
      case 0: {  // live rows i * kMR ... of x (gathered unless all are live), normalized and packed
        if (!all)
          for (int64_t r = i * gm::kMR; r < std::min(L, (i + 1) * gm::kMR); ++r)
            std::memcpy(xl + r * E, x.typed_data() + rows[r] * E, E * sizeof(float));
        return NormPackTile(xl, input_norm.typed_data(), eps, L, E, i, xt);
      }
      case 1: return qkv_gemm.Run(i);
      case 2: {  // live query i = (b, t): its q heads in place, its k and v into the cache
        const int64_t bt = rows[i], b = bt / T, t = bt % T;
        const int64_t slot = std::clamp<int64_t>(index.typed_data()[b], 0, S - T) + t;
        const float* c = cos.typed_data() + bt * (D / 2);
        const float* s = sin.typed_data() + bt * (D / 2);
        float* row = qkv + i * NQKV;
        for (int64_t n = 0; n < H; ++n) NormRope(row + n * D, q_norm, eps, c, s, D);
        for (int64_t n = 0; n < K; ++n) {
          float* key = k_cache->typed_data() + ((b * K + n) * S + slot) * D;
          std::memcpy(key, row + NQ + n * D, D * sizeof(float));
          NormRope(key, k_norm, eps, c, s, D);
          std::memcpy(v_cache->typed_data() + ((b * K + n) * S + slot) * D, row + NQ + (K + n) * D,
                      D * sizeof(float));
        }
        return;
      }
      case 3: return gasp::attention::RunItem(attend, i);
      case 4: return NormPackTile(attn, nullptr, eps, L, NQ, i, xt);
      case 5: return o_gemm.Run(i);
      case 6: return NormPackTile(x1, post_norm.typed_data(), eps, L, E, i, xt);
      case 7: return gate_up_gemm.Run(i);
      case 8: return NormPackTile(h, nullptr, eps, L, F, i, xt);
      case 9: return down_gemm.Run(i);
      default: {  // output row i (some rows skipped): its live row's result, else x's row as it came
        const int64_t at = std::lower_bound(rows, rows + L, static_cast<int32_t>(i)) - rows;
        const bool is_live = at < L && rows[at] == i;
        std::memcpy(out->typed_data() + i * E, is_live ? yl + at * E : x.typed_data() + i * E, E * sizeof(float));
        return;
      }
    }
  };
  gasp::ParallelPhases(pool,
                       {tiles, qkv_gemm.split.items, L, L * K, tiles, o_gemm.split.items, tiles,
                        gate_up_gemm.split.items, tiles, down_gemm.split.items, all ? 0 : M},
                       true, phase);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaspDecoderLayer, DecoderLayer,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // x [B, T, E]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // input_norm [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // qkv_w, packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // qkv_bias [(H + 2K) D]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // qk_norm [2, D]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // o_w, packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // post_attn_norm [E]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // gate_up_w, packed and interleaved
                                  .Arg<ffi::Buffer<ffi::F32>>()   // down_w, packed
                                  .Arg<ffi::Buffer<ffi::F32>>()   // cos [B, T, D / 2]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // sin [B, T, D / 2]
                                  .Arg<ffi::Buffer<ffi::S32>>()   // index [B]: row b's first write slot
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // mask [B, T, S]
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k_cache [B, K, S, D], aliased to result 1
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v_cache, aliased to result 2
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out [B, T, E]
                                  .Ret<ffi::Buffer<ffi::F32>>()   // k_cache
                                  .Ret<ffi::Buffer<ffi::F32>>()   // v_cache
                                  .Attr<int64_t>("num_heads")
                                  .Attr<float>("eps")
                                  .Attr<bool>("qk_norm"));
