#include "bench/latency.h"

#include <algorithm>
#include <cmath>

namespace vexstate::bench {

double LatencyRecorder::PercentileNs(double p) {
  if (samples_ns_.empty()) return 0;
  if (sorted_ != samples_ns_.size()) {
    std::sort(samples_ns_.begin(), samples_ns_.end());
    sorted_ = samples_ns_.size();
  }
  // Nearest rank: the smallest sample with at least p% of samples <= it.
  const size_t n = samples_ns_.size();
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * n));
  rank = std::clamp<size_t>(rank, 1, n);
  return static_cast<double>(samples_ns_[rank - 1]);
}

void LatencyRecorder::Report(benchmark::State& state,
                             const std::string& prefix) {
  auto us = [&](double p) { return PercentileNs(p) / 1000.0; };
  state.counters[prefix + "min_us"] = us(0);
  state.counters[prefix + "p50_us"] = us(50);
  state.counters[prefix + "p90_us"] = us(90);
  state.counters[prefix + "p99_us"] = us(99);
  state.counters[prefix + "max_us"] = us(100);
  state.counters[prefix + "samples"] = static_cast<double>(samples_ns_.size());
}

}  // namespace vexstate::bench
