#include "vmm/devices/witness_console.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "guests/common/witness_abi.h"

namespace vexstate {

namespace {
// COM1 line-status register: THRE | TEMT ("ready to send"), for guests that poll it.
constexpr uint16_t kCom1LineStatus = VEX_X86_CONSOLE_PORT + 5;
constexpr uint8_t kLineStatusReady = 0x60;
constexpr size_t kMaxLine = 4096;
}  // namespace

uint64_t WitnessReport::Get(const std::string& key, uint64_t fallback) const {
  auto it = fields.find(key);
  return it == fields.end() ? fallback : it->second;
}

absl::Status ParseWitnessLine(const std::string& line, WitnessReport* report) {
  std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (words.size() < 2 || words[0] != "VEX") {
    return absl::InvalidArgumentError(absl::StrFormat("not a witness report: \"%s\"", line));
  }
  report->kind = words[1];
  report->line = line;
  for (size_t i = 2; i < words.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(words[i], absl::MaxSplits('=', 1));
    uint64_t value = 0;
    bool ok = absl::StartsWith(kv.second, "0x") ? absl::SimpleHexAtoi(kv.second.substr(2), &value)
                                               : absl::SimpleAtoi(kv.second, &value);
    if (kv.first.empty() || !ok) {
      // Non-numeric values (e.g. arch=x86_64) are kept out of `fields`; the raw line has them.
      continue;
    }
    report->fields[kv.first] = value;
  }
  return absl::OkStatus();
}

void WitnessConsole::OnPortIo(uint32_t vcpu, uint16_t port, bool is_write, uint8_t* data, uint32_t size) {
  if (is_write) {
    if (port == VEX_X86_CONSOLE_PORT) OnByte(vcpu, data[0]);
    return;
  }
  std::memset(data, 0, size);
  if (port == kCom1LineStatus) data[0] = kLineStatusReady;
}

void WitnessConsole::OnMmio(uint32_t vcpu, uint64_t gpa, bool is_write, uint8_t* data, uint32_t len) {
  if (is_write) {
    if (gpa == VEX_ARM64_CONSOLE_MMIO) OnByte(vcpu, data[0]);
    return;
  }
  std::memset(data, 0, len);
}

void WitnessConsole::OnVcpuStopped(uint32_t vcpu, const absl::Status& reason) {
  if (reason.ok()) return;
  absl::MutexLock lock(&mu_);
  if (vcpu_error_.ok()) vcpu_error_ = reason;
}

void WitnessConsole::OnByte(uint32_t vcpu, uint8_t byte) {
  std::optional<WitnessReport> parsed;
  {
    absl::MutexLock lock(&mu_);
    transcript_.push_back(static_cast<char>(byte));
    // A guest beating every millisecond writes 3.6 MB an hour: keep the newest bytes only,
    // trimming in halves so that each byte is moved at most once on average.
    if (transcript_.size() >= 2 * kTranscriptBytes) transcript_.erase(0, transcript_.size() - kTranscriptBytes);
    std::string& partial = partial_[vcpu];
    if (byte == '.' && partial.empty()) {
      ++heartbeats_;
      last_heartbeat_ = absl::Now();
      if (!first_heartbeat_.has_value()) first_heartbeat_ = last_heartbeat_;
      return;
    }
    if (byte == '\r') return;
    if (byte != '\n') {
      if (partial.size() < kMaxLine) partial.push_back(static_cast<char>(byte));
      return;
    }
    WitnessReport report;
    if (ParseWitnessLine(partial, &report).ok()) {
      report.vcpu = vcpu;
      report.time = absl::Now();
      reports_.push_back(report);
      parsed = report;
    }
    partial.clear();
  }
  if (parsed.has_value() && listener_) listener_(*parsed);
}

std::vector<WitnessReport> WitnessConsole::Reports() const {
  absl::MutexLock lock(&mu_);
  return reports_;
}

namespace {
bool Matches(const WitnessReport& r, const std::string& kind, std::optional<uint32_t> vcpu,
             const std::map<std::string, uint64_t>& match) {
  if (r.kind != kind) return false;
  if (vcpu.has_value() && r.vcpu != *vcpu) return false;
  for (const auto& [key, value] : match) {
    if (r.Get(key) != value || !r.Has(key)) return false;
  }
  return true;
}
}  // namespace

std::vector<WitnessReport> WitnessConsole::Find(const std::string& kind, std::optional<uint32_t> vcpu,
                                                const std::map<std::string, uint64_t>& match) const {
  absl::MutexLock lock(&mu_);
  std::vector<WitnessReport> out;
  for (const WitnessReport& r : reports_) {
    if (Matches(r, kind, vcpu, match)) out.push_back(r);
  }
  return out;
}

absl::StatusOr<std::vector<WitnessReport>> WitnessConsole::WaitFor(const std::string& kind,
                                                                   std::optional<uint32_t> vcpu,
                                                                   const std::map<std::string, uint64_t>& match,
                                                                   size_t count, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    if (!vcpu_error_.ok()) return true;
    size_t n = 0;
    for (const WitnessReport& r : reports_) n += Matches(r, kind, vcpu, match);
    return n >= count;
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  std::vector<WitnessReport> out;
  for (const WitnessReport& r : reports_) {
    if (Matches(r, kind, vcpu, match)) out.push_back(r);
  }
  if (out.size() >= count) return out;
  if (!vcpu_error_.ok()) {
    return absl::Status(vcpu_error_.code(),
                        absl::StrFormat("while waiting for VEX %s: %s", kind, vcpu_error_.message()));
  }
  std::string tail = transcript_.size() > 600 ? transcript_.substr(transcript_.size() - 600) : transcript_;
  return absl::DeadlineExceededError(absl::StrFormat("no %u x \"VEX %s\" (vcpu %s) within %s; saw %u; console tail:\n%s",
                                                     count, kind, vcpu.has_value() ? absl::StrCat(*vcpu) : "any",
                                                     absl::FormatDuration(timeout), out.size(), tail));
}

uint64_t WitnessConsole::heartbeats() const {
  absl::MutexLock lock(&mu_);
  return heartbeats_;
}

std::optional<absl::Time> WitnessConsole::first_heartbeat() const {
  absl::MutexLock lock(&mu_);
  return first_heartbeat_;
}

std::optional<absl::Time> WitnessConsole::last_heartbeat() const {
  absl::MutexLock lock(&mu_);
  return last_heartbeat_;
}

std::string WitnessConsole::Transcript() const {
  absl::MutexLock lock(&mu_);
  return transcript_;
}

absl::Status WitnessConsole::vcpu_error() const {
  absl::MutexLock lock(&mu_);
  return vcpu_error_;
}

}  // namespace vexstate
