// Per-operation latency for Google Benchmark programs.
//
// Google Benchmark reports the mean time per iteration. A control plane or a
// pause path is judged by its tail, and this machine is shared and noisy, so
// every latency benchmark here also times each iteration on its own and
// reports the distribution as counters (microseconds):
//   min_us, p50_us, p90_us, p99_us, max_us, samples.
// bench/run.py reads them from the JSON output of every repetition.
//
// Contract: a LatencyRecorder belongs to one benchmark thread (not
// thread-safe). Percentiles use the nearest-rank method on the samples of one
// run (one repetition), so p99 needs at least 100 samples to mean anything:
// ReportLatency adds `samples` so a reader can judge.
#ifndef VEXSTATE_BENCH_LATENCY_H_
#define VEXSTATE_BENCH_LATENCY_H_

#include <time.h>

#include <cstdint>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"

namespace vexstate::bench {

// CLOCK_MONOTONIC in nanoseconds (vDSO: no system call).
inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

class LatencyRecorder {
 public:
  explicit LatencyRecorder(size_t expected_samples = 4096) {
    samples_ns_.reserve(expected_samples);
  }

  void Add(int64_t ns) { samples_ns_.push_back(ns); }
  size_t size() const { return samples_ns_.size(); }

  // Nearest-rank percentile, `p` in [0, 100], in nanoseconds; 0 without
  // samples. Sorts the samples (once; later Adds re-sort).
  double PercentileNs(double p);

  // Sets <prefix>min_us, p50_us, p90_us, p99_us, max_us and samples on
  // `state`.
  void Report(benchmark::State& state, const std::string& prefix = "");

 private:
  std::vector<int64_t> samples_ns_;
  size_t sorted_ = 0;  // samples_ns_[0, sorted_) is known sorted
};

}  // namespace vexstate::bench

#endif  // VEXSTATE_BENCH_LATENCY_H_
