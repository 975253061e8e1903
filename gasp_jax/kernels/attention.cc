// Attention for XLA:CPU over only the KV slots each query's mask keeps (cpu_attention.py).
//
// out[b, t, h] = sum_s softmax_s(q[b, t, h] . k[b, h / G, s] / sqrt(D)) v[b, h / G, s], s over the slots with
// mask[b, t, s]; G = H / K query heads share kv head h / G (HF's repeat_kv). XLA's masked formulation reads and
// multiplies the whole cache window and runs as a dozen small ops per layer; here each (row, query, kv head)
// reads its valid slots once, for all G of its query heads, in one call. A query with no valid slot averages v
// over every slot (what the masked softmax gives when all scores are equal).
//
// The sum runs over a query's valid slots in increasing slot order whatever the window or batch, so its
// result does not depend on the cache length it is read through or on its neighbours.
//
// Work split: items are (row, query, kv head) triples, shared with XLA's intra-op pool (parallel.h).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel.h"
#include "vec16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace gasp;  // ParallelFor; V16, Load, Store, Splat, Sum, Exp

struct Problem {
  const float* q;   // [B, T, H, D]
  const float* k;   // [B, K, S, D]
  const float* v;   // [B, K, S, D]
  const bool* mask; // [B, T, S]
  float* out;       // [B, T, H, D]
  int64_t B, T, H, K, S, D;
};

inline float Dot(const float* a, const float* b, int64_t d) {
  V16 acc = V16{};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) acc += Load(a + i) * Load(b + i);
  float s = Sum(acc);
  for (; i < d; ++i) s += a[i] * b[i];
  return s;
}

inline void Axpy(float a, const float* x, float* y, int64_t d) {  // y += a x
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes) Store(y + i, Load(y + i) + a * Load(x + i));
  for (; i < d; ++i) y[i] += a * x[i];
}

// One (row b, query t, kv head kh): its G query heads against the query's valid slots.
void RunItem(const Problem& p, int64_t item) {
  const int64_t bt = item / p.K, b = bt / p.T, kh = item % p.K, G = p.H / p.K, D = p.D, S = p.S;
  const float* q = p.q + (bt * p.H + kh * G) * D;
  const float* kb = p.k + (b * p.K + kh) * S * D;
  const float* vb = p.v + (b * p.K + kh) * S * D;
  const bool* m = p.mask + bt * S;
  float* out = p.out + (bt * p.H + kh * G) * D;

  static thread_local std::vector<int32_t> slots;
  static thread_local std::vector<float> scores, acc;
  slots.clear();
  for (int64_t s = 0; s < S; ++s)
    if (m[s]) slots.push_back(static_cast<int32_t>(s));
  const bool none = slots.empty();
  if (none)
    for (int64_t s = 0; s < S; ++s) slots.push_back(static_cast<int32_t>(s));
  const int64_t n = static_cast<int64_t>(slots.size());
  const int64_t stride = (n + kLanes - 1) / kLanes * kLanes;  // padded: Exp runs whole vectors
  if (static_cast<int64_t>(scores.size()) < G * stride) scores.resize(G * stride);
  if (static_cast<int64_t>(acc.size()) < G * D) acc.resize(G * D);

  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  for (int64_t j = 0; j < n; ++j) {
    const float* key = kb + slots[j] * D;
    for (int64_t g = 0; g < G; ++g) scores[g * stride + j] = none ? 0.f : Dot(q + g * D, key, D) * scale;
  }
  std::fill(acc.begin(), acc.begin() + G * D, 0.f);
  for (int64_t g = 0; g < G; ++g) {
    float* sg = scores.data() + g * stride;
    float peak = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < n; ++j) peak = std::max(peak, sg[j]);
    for (int64_t j = n; j < stride; ++j) sg[j] = -std::numeric_limits<float>::infinity();
    V16 total = V16{};
    for (int64_t j = 0; j < stride; j += kLanes) {
      const V16 e = Exp(Load(sg + j) - peak);
      Store(sg + j, e);
      total += e;
    }
    const float inv = 1.f / Sum(total);
    for (int64_t j = 0; j < n; ++j) sg[j] *= inv;
  }
  for (int64_t j = 0; j < n; ++j) {
    const float* value = vb + slots[j] * D;
    for (int64_t g = 0; g < G; ++g) Axpy(scores[g * stride + j], value, acc.data() + g * D, D);
  }
  std::memcpy(out, acc.data(), G * D * sizeof(float));
}

ffi::Error Attention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                     ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::ResultBuffer<ffi::F32> out) {
  const auto qd = q.dimensions(), kd = k.dimensions(), md = mask.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || md.size() != 3)
    return ffi::Error::InvalidArgument("attention: want q [B, T, H, D], k and v [B, K, S, D], mask [B, T, S]");
  const int64_t B = qd[0], T = qd[1], H = qd[2], D = qd[3], K = kd[1], S = kd[2];
  if (kd[0] != B || kd[3] != D || K == 0 || H % K || md[0] != B || md[1] != T || md[2] != S ||
      v.dimensions().size() != 4 || !std::equal(kd.begin(), kd.end(), v.dimensions().begin()))
    return ffi::Error::InvalidArgument("attention: q, k, v and mask shapes disagree");
  if (B == 0 || T == 0 || H == 0 || D == 0) return ffi::Error::Success();
  if (S == 0) {
    std::memset(out->typed_data(), 0, B * T * H * D * sizeof(float));
    return ffi::Error::Success();
  }
  const Problem problem{q.typed_data(), k.typed_data(), v.typed_data(), mask.typed_data(), out->typed_data(),
                        B, T, H, K, S, D};
  ParallelFor(pool, B * T * K, B * T * H * S * D >= (int64_t{1} << 16),
              [&problem](int64_t item) { RunItem(problem, item); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaspAttention, Attention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
