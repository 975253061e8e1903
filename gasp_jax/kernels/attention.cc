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

#include "attention.h"
#include "parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using gasp::ParallelFor;
using gasp::attention::Problem;
using gasp::attention::RunItem;

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
                        B, T, H, K, S, D, H * D, H * D};
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
