// Dirty-page tracking on real KVM, witnessed by the guest's own memory workload: the pages
// the guest dirties are the pages KVM reports, and an idle guest dirties (almost) nothing.
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"
#include "tests/testing/witness_vm.h"

namespace vexstate {
namespace {

using testing::WitnessOptions;
using testing::WitnessVm;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kWorksetPages = 64;

size_t CountDirty(const std::vector<uint64_t>& bitmap, uint64_t first_page, uint64_t pages) {
  size_t n = 0;
  for (uint64_t p = first_page; p < first_page + pages; ++p) n += (bitmap[p / 64] >> (p % 64)) & 1;
  return n;
}

TEST(DirtyLog, ReportsThePagesTheWorkloadWrites) {
  WitnessOptions options;
  options.workset_pages = kWorksetPages;
  options.dirty_pages_per_sec = 2000;  // a pass over the working set every ~32 ms
  auto w = WitnessVm::Boot(options);
  ASSERT_TRUE(w.ok()) << w.status();
  Vm& vm = (*w)->vm();
  ASSERT_TRUE(vm.SetDirtyLogging(true).ok());
  ASSERT_TRUE(vm.FetchDirtyPages().ok());  // start from a clean log
  absl::SleepFor(absl::Milliseconds(400));
  auto dirty = vm.FetchDirtyPages();
  ASSERT_TRUE(dirty.ok()) << dirty.status();
  const uint64_t workset_first = VEX_WORKSET_OFFSET / kPage;
  EXPECT_EQ(CountDirty(*dirty, workset_first, kWorksetPages), kWorksetPages) << "every workload page was written";
  // Far beyond the working set nothing is written.
  const uint64_t beyond = workset_first + kWorksetPages + 16;
  const uint64_t total = vm.memory().size() / kPage;
  EXPECT_EQ(CountDirty(*dirty, beyond, total - beyond), 0u);
}

TEST(DirtyLog, IdleGuestDirtiesNoWorkloadPagesAndLogIsClearedOnRead) {
  auto w = WitnessVm::Boot({});
  ASSERT_TRUE(w.ok()) << w.status();
  Vm& vm = (*w)->vm();
  ASSERT_TRUE(vm.Pause().ok());
  ASSERT_TRUE(vm.SetDirtyLogging(true).ok());
  ASSERT_TRUE(vm.FetchDirtyPages().ok());
  // Paused: nothing can be dirtied by the guest.
  auto second = vm.FetchDirtyPages();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(CountDirty(*second, 0, vm.memory().size() / kPage), 0u);
}

TEST(DirtyLog, FetchWithoutEnablingIsRefused) {
  auto w = WitnessVm::Boot({});
  ASSERT_TRUE(w.ok()) << w.status();
  auto dirty = (*w)->vm().FetchDirtyPages();
  EXPECT_EQ(dirty.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace vexstate
