// The work split of the attention and greedy kernels: items claimed from a shared counter by the calling thread
// and up to (threads - 1) tasks on XLA's intra-op pool (packed_gemm.cc does the same in two phases).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>

#include "xla/ffi/api/ffi.h"

namespace gasp {

// Runs item(i) for every i in [0, items) and returns once all are done; on the pool too when `parallel` (a few
// microseconds of work is not worth a pool round trip). The caller never waits on a task that has not started:
// it claims items itself, and a task that starts after the call returned finds none left (it holds only the
// shared counters and `item`, whose captures it then never touches).
template <typename Item>
void ParallelFor(xla::ffi::ThreadPool pool, int64_t items, bool parallel, Item item) {
  struct Shared {
    Shared(Item fn, int64_t n) : item(std::move(fn)), items(n) {}
    Item item;
    int64_t items;
    std::atomic<int64_t> next{0}, done{0};
    void Work() {
      int64_t finished = 0;
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < items; ++finished) item(i);
      if (finished) done.fetch_add(finished, std::memory_order_acq_rel);
    }
  };
  auto shared = std::make_shared<Shared>(std::move(item), items);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (parallel && threads > 1 && items > 1)
    for (int64_t t = 0; t < std::min(threads, items) - 1; ++t) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  while (shared->done.load(std::memory_order_acquire) < items) std::this_thread::yield();
}

}  // namespace gasp
