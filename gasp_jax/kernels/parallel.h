// The work split of every kernel: items claimed from shared counters by the calling thread and up to
// (threads - 1) tasks on XLA's intra-op pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace gasp {

// Runs item(phase, i) for every i in [0, counts[phase]), phase by phase: no item of a phase starts before every
// item of the phase before it has finished. Returns once all are done; on the pool too when `parallel` (a few
// microseconds of work is not worth a pool round trip). The caller never waits on a task that has not started:
// it claims items itself and waits only for items other threads have claimed (so are running); a task that
// starts late joins the current phase, and one that starts after the call returned finds no item left (it
// holds only the shared counters and `item`, whose captures it then never touches). One call keeps the pool's
// threads for all its phases, where separate calls would wake them once per phase.
template <typename Item>
void ParallelPhases(xla::ffi::ThreadPool pool, std::vector<int64_t> counts, bool parallel, Item item) {
  struct Shared {
    Shared(Item fn, std::vector<int64_t> n)
        : item(std::move(fn)), counts(std::move(n)), next(counts.size()), done(counts.size()) {}
    Item item;
    std::vector<int64_t> counts;
    std::vector<std::atomic<int64_t>> next, done;
    void Work() {
      for (size_t p = 0; p < counts.size(); ++p) {
        int64_t finished = 0;
        for (int64_t i; (i = next[p].fetch_add(1, std::memory_order_relaxed)) < counts[p]; ++finished)
          item(static_cast<int>(p), i);
        if (finished) done[p].fetch_add(finished, std::memory_order_acq_rel);
        while (done[p].load(std::memory_order_acquire) < counts[p]) std::this_thread::yield();
      }
    }
  };
  const int64_t most = counts.empty() ? 0 : *std::max_element(counts.begin(), counts.end());
  auto shared = std::make_shared<Shared>(std::move(item), std::move(counts));
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  if (parallel && threads > 1 && most > 1)
    for (int64_t t = 0; t < std::min(threads, most) - 1; ++t) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
}

// ParallelPhases with one phase: item(i) for every i in [0, items).
template <typename Item>
void ParallelFor(xla::ffi::ThreadPool pool, int64_t items, bool parallel, Item item) {
  ParallelPhases(pool, {items}, parallel, [fn = std::move(item)](int, int64_t i) { fn(i); });
}

}  // namespace gasp
