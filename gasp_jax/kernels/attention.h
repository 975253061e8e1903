// One query's attention over the KV slots its mask keeps: the item both attention.cc (the attention call) and
// decoder_layer.cc (a whole layer) run. Header-only; attention.cc says what is computed and why.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "vec16.h"

namespace gasp::attention {

struct Problem {
  const float* q;   // [B, T, H, D], query i at q + i * q_stride
  const float* k;   // [B, K, S, D]
  const float* v;   // [B, K, S, D]
  const bool* mask; // [B, T, S]
  float* out;       // [B, T, H, D], query i at out + i * out_stride
  int64_t B, T, H, K, S, D;
  int64_t q_stride, out_stride;  // floats between consecutive queries: H * D when packed
  const int32_t* rows = nullptr;  // query i is (b, t) = rows[i] = b * T + t; null: query i is i
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

// One (query i, kv head kh), item = i * K + kh: its G query heads against the query's valid slots.
inline void RunItem(const Problem& p, int64_t item) {
  const int64_t i = item / p.K, bt = p.rows ? p.rows[i] : i, b = bt / p.T, kh = item % p.K;
  const int64_t G = p.H / p.K, D = p.D, S = p.S;
  const float* q = p.q + i * p.q_stride + kh * G * D;
  const float* kb = p.k + (b * p.K + kh) * S * D;
  const float* vb = p.v + (b * p.K + kh) * S * D;
  const bool* m = p.mask + bt * S;
  float* out = p.out + i * p.out_stride + kh * G * D;

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

}  // namespace gasp::attention
