#include "migration/testing_phase_delay.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace vexstate::migration {

TestingPhaseDelay TestingPhaseDelay::FromEnvironment() { return Parse(std::getenv(kTestingPhaseDelayEnv)); }

TestingPhaseDelay TestingPhaseDelay::Parse(const char* value) {
  TestingPhaseDelay hook;
  if (value == nullptr || *value == '\0') return hook;
  const std::string text(value);
  const size_t colon = text.rfind(':');
  v1::MigrationPhase phase = v1::MIGRATION_PHASE_UNSPECIFIED;
  uint32_t ms = 0;
  const bool ok = colon != std::string::npos &&
                  (v1::MigrationPhase_Parse(text.substr(0, colon), &phase) ||
                   v1::MigrationPhase_Parse(absl::StrCat("MIGRATION_", text.substr(0, colon)), &phase)) &&
                  phase != v1::MIGRATION_PHASE_UNSPECIFIED && absl::SimpleAtoi(text.substr(colon + 1), &ms);
  if (!ok) {
    std::fprintf(stderr, "TESTING HOOK %s=\"%s\" is not PHASE:MS: ignored\n", kTestingPhaseDelayEnv, value);
    return hook;
  }
  hook.phase_ = phase;
  hook.delay_ = absl::Milliseconds(ms);
  return hook;
}

void TestingPhaseDelay::At(v1::MigrationPhase phase) {
  if (done_ || phase != phase_) return;
  done_ = true;
  std::fprintf(stderr, "TESTING HOOK %s: holding the migration %s ms in %s\n", kTestingPhaseDelayEnv,
               std::to_string(absl::ToInt64Milliseconds(delay_)).c_str(), v1::MigrationPhase_Name(phase).c_str());
  absl::SleepFor(delay_);
}

}  // namespace vexstate::migration
