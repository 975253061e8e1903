// Greedy token choice for XLA:CPU (cpu_sampling.py): per row of fp32 logits [B, V], the first index of the
// maximum and its log-probability -log(sum_v exp(logits_v - max)), as sampling/core.py's greedy_tokens.
//
// XLA:CPU runs that as three reductions over the logits (max, first index of the max, sum of exps), each
// its own loop; here one row is one item: a vector max, a vector sum of exps, and a scan for the first
// index of the max. Rows split over the calling thread and XLA's intra-op pool (parallel.h).
// A row with a NaN logit (or every logit -inf) gives the last index and a NaN log-probability.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "parallel.h"
#include "vec16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace gasp;  // ParallelFor; V16, Load, Splat, Sum, Exp

struct Rows {
  const float* logits;
  int32_t* tokens;
  float* logprobs;
  int64_t V;

  void operator()(int64_t b) const {
    const float* x = logits + b * V;
    const float inf = std::numeric_limits<float>::infinity();
    V16 peak = Splat(-inf);
    int64_t i = 0;
    for (; i + kLanes <= V; i += kLanes) {
      const V16 v = Load(x + i);
      peak = v > peak ? v : peak;  // NaN never compares greater: the max of the other entries
    }
    float top = -inf;
    for (int l = 0; l < kLanes; ++l) top = std::max(top, peak[l]);
    for (; i < V; ++i) top = x[i] > top ? x[i] : top;
    // Two-level sum: per-lane partial sums of 64 vectors, then their total (a lane summing a 152k vocabulary
    // in sequence would lose ~1e-5 of relative accuracy; XLA's reductions are pairwise).
    constexpr int64_t kBlock = 64 * kLanes;
    V16 total = V16{};
    for (i = 0; i + kLanes <= V;) {
      V16 part = V16{};
      for (const int64_t end = std::min(V - kLanes + 1, i + kBlock); i < end; i += kLanes)
        part += Exp(Load(x + i) - top);
      total += part;
    }
    float sum = Sum(total);
    for (; i < V; ++i) sum += std::exp(x[i] - top);
    if (sum != sum || top == -inf) {  // a NaN logit (its exp is NaN) or every logit -inf: no maximum
      tokens[b] = static_cast<int32_t>(V - 1);
      logprobs[b] = std::numeric_limits<float>::quiet_NaN();
      return;
    }
    int64_t first = 0;
    while (x[first] != top) ++first;
    tokens[b] = static_cast<int32_t>(first);
    logprobs[b] = -std::log(sum);
  }
};

ffi::Error Greedy(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::ResultBuffer<ffi::S32> tokens,
                  ffi::ResultBuffer<ffi::F32> logprobs) {
  const auto d = logits.dimensions();
  if (d.size() != 2 || d[1] == 0 || tokens->dimensions().size() != 1 || tokens->dimensions()[0] != d[0])
    return ffi::Error::InvalidArgument("greedy: want logits [B, V > 0], tokens and log-probs [B]");
  ParallelFor(pool, d[0], d[0] * d[1] >= (int64_t{1} << 16),
              Rows{logits.typed_data(), tokens->typed_data(), logprobs->typed_data(), d[1]});
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GaspGreedy, Greedy,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
