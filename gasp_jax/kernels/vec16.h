// 16-float vectors (gcc/clang vector extensions: one AVX-512 register, two AVX2 ones, four 128-bit ones) and
// the few operations the attention and greedy kernels share. Header-only: each kernel is its own .cc.
#pragma once

#include <cstdint>
#include <cstring>

namespace gasp {

typedef float V16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16;

inline V16 Load(const float* p) { V16 v; std::memcpy(&v, p, sizeof(v)); return v; }
inline void Store(float* p, V16 v) { std::memcpy(p, &v, sizeof(v)); }
inline V16 Splat(float a) { return V16{} + a; }
inline float Sum(V16 v) {
  float s = 0.f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// exp(x) for x <= 0 (scores minus their maximum), ~1 ulp: x = n ln2 + r, |r| <= ln2 / 2, a degree-7
// polynomial for e^r (Cephes' expf), 2^n from the exponent bits; below -87 (2^n subnormal) it is 0.
inline V16 Exp(V16 x) {
  const V16 floor = Splat(-87.f);
  const V16 xc = x < floor ? floor : x;
  const I16 n = -__builtin_convertvector(Splat(0.5f) - xc * 1.44269504088896341f, I16);  // round(x / ln2), x <= 0
  const V16 nf = __builtin_convertvector(n, V16);
  const V16 r = xc - nf * 0.693359375f + nf * 2.12194440e-4f;
  V16 p = Splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  V16 scale;
  const I16 bits = (n + 127) << 23;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < floor ? V16{} : p * scale;
}

}  // namespace gasp
