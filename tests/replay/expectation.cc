#include "tests/replay/expectation.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "guests/common/witness_abi.h"

namespace vexstate::replay {

namespace {

// Fields the guest prints in decimal (witness_abi.h); every other value is hex with 0x.
bool IsDecimalField(absl::string_view key) {
  static const std::set<absl::string_view> kDecimal = {"cpu", "seq", "bank", "banks", "pages", "bad", "cmd"};
  return kDecimal.count(key) != 0;
}

std::string FormatValue(absl::string_view key, uint64_t value) {
  return IsDecimalField(key) ? absl::StrCat(value) : absl::StrFormat("0x%x", value);
}

bool ParseValue(absl::string_view text, uint64_t* value) {
  if (absl::ConsumePrefix(&text, "0x")) return !text.empty() && absl::SimpleHexAtoi(text, value);
  return absl::SimpleAtoi(text, value);
}

// "key=value" with a numeric value.
absl::Status ParseAssignment(absl::string_view word, absl::string_view where, std::string* key, uint64_t* value) {
  std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(word, absl::MaxSplits('=', 1));
  if (kv.first.empty() || !absl::StrContains(word, '=') || !ParseValue(kv.second, value)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: \"%s\" is not key=value with a number (hex with 0x, else decimal)", where, word));
  }
  *key = std::string(kv.first);
  return absl::OkStatus();
}

}  // namespace

const ControlField kControlFields[2] = {
    {"hold_mask", VEX_CTL_HOLD_MASK},
    {"heartbeat_ms", VEX_CTL_HEARTBEAT_MS},
};

absl::StatusOr<ControlWrite> MakeControlWrite(absl::string_view field, uint64_t value) {
  for (const ControlField& known : kControlFields) {
    if (field == known.name) return ControlWrite{std::string(field), known.offset, value};
  }
  std::vector<std::string> names;
  for (const ControlField& known : kControlFields) names.push_back(known.name);
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown control field \"%s\" (known: %s)", field, absl::StrJoin(names, ", ")));
}

std::string ExpectedReport::ToLine() const {
  std::string line = absl::StrFormat("VEX %s cpu=%u", kind, vcpu);
  for (const auto& [key, value] : fields) absl::StrAppend(&line, " ", key, "=", FormatValue(key, value));
  return line;
}

absl::StatusOr<Expectation> ParseExpectation(absl::string_view text, absl::string_view source) {
  Expectation expectation;
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    const std::string where = absl::StrFormat("%s:%d", source, number);
    absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "#")) {
      expectation.comments.push_back(std::string(absl::StripLeadingAsciiWhitespace(line)));
      continue;
    }
    std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    if (words[0] == "control") {
      if (words.size() < 2)
        return absl::InvalidArgumentError(absl::StrFormat("%s: control line without a field", where));
      for (size_t i = 1; i < words.size(); ++i) {
        std::string key;
        uint64_t value = 0;
        if (absl::Status s = ParseAssignment(words[i], where, &key, &value); !s.ok()) return s;
        absl::StatusOr<ControlWrite> write = MakeControlWrite(key, value);
        if (!write.ok()) return absl::InvalidArgumentError(absl::StrCat(where, ": ", write.status().message()));
        expectation.controls.push_back(*write);
      }
      continue;
    }
    if (words[0] != "VEX" || words.size() < 2) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: \"%s\" is neither a \"control\" line nor a \"VEX <KIND> cpu=<n> ...\" report", where, line));
    }
    ExpectedReport report;
    report.kind = std::string(words[1]);
    report.line = number;
    bool has_cpu = false;
    for (size_t i = 2; i < words.size(); ++i) {
      std::string key;
      uint64_t value = 0;
      if (absl::Status s = ParseAssignment(words[i], where, &key, &value); !s.ok()) return s;
      if (key == "cpu") {
        report.vcpu = static_cast<uint32_t>(value);
        has_cpu = true;
      } else {
        report.fields.emplace_back(key, value);
      }
    }
    if (!has_cpu) return absl::InvalidArgumentError(absl::StrFormat("%s: the report has no cpu=", where));
    expectation.reports.push_back(std::move(report));
  }
  return expectation;
}

std::string FormatExpectation(const Expectation& expectation) {
  std::string text;
  for (const std::string& comment : expectation.comments) absl::StrAppend(&text, "# ", comment, "\n");
  for (const ControlWrite& write : expectation.controls) {
    const std::string value = write.value == 0 ? "0" : absl::StrFormat("0x%x", write.value);
    absl::StrAppend(&text, "control ", write.field, "=", value, "\n");
  }
  for (const ExpectedReport& report : expectation.reports) absl::StrAppend(&text, report.ToLine(), "\n");
  return text;
}

absl::Status MatchReports(const Expectation& expectation, const std::vector<WitnessReport>& reports) {
  std::map<uint32_t, std::vector<const ExpectedReport*>> expected;
  std::map<uint32_t, std::vector<const WitnessReport*>> got;
  for (const ExpectedReport& e : expectation.reports) expected[e.vcpu].push_back(&e);
  for (const WitnessReport& r : reports) got[r.vcpu].push_back(&r);
  std::set<uint32_t> vcpus;
  for (const auto& [vcpu, list] : expected) vcpus.insert(vcpu);
  for (const auto& [vcpu, list] : got) vcpus.insert(vcpu);

  std::string problems;
  for (uint32_t vcpu : vcpus) {
    const std::vector<const ExpectedReport*>& want = expected[vcpu];
    const std::vector<const WitnessReport*>& have = got[vcpu];
    // The first difference in order: a missing or extra report, another kind, another value.
    std::string first;
    for (size_t i = 0; i < std::max(want.size(), have.size()) && first.empty(); ++i) {
      if (i >= have.size()) {
        first =
            absl::StrFormat("report %u missing: expected \"%s\" (line %d)", i + 1, want[i]->ToLine(), want[i]->line);
      } else if (i >= want.size()) {
        first = absl::StrFormat("report %u not expected: the guest said \"%s\"", i + 1, have[i]->line);
      } else if (have[i]->kind != want[i]->kind) {
        first = absl::StrFormat("report %u: expected a %s (line %d), the guest said \"%s\"", i + 1, want[i]->kind,
                                want[i]->line, have[i]->line);
      } else {
        for (const auto& [key, value] : want[i]->fields) {
          if (!have[i]->Has(key)) {
            first = absl::StrFormat("report %u: no %s= in \"%s\" (line %d wants %s)", i + 1, key, have[i]->line,
                                    want[i]->line, FormatValue(key, value));
          } else if (have[i]->Get(key) != value) {
            first = absl::StrFormat("report %u: %s=%s, expected %s (line %d); the guest said \"%s\"", i + 1, key,
                                    FormatValue(key, have[i]->Get(key)), FormatValue(key, value), want[i]->line,
                                    have[i]->line);
          }
          if (!first.empty()) break;
        }
      }
    }
    if (first.empty()) continue;
    absl::StrAppendFormat(&problems, "vCPU %u: %s\n  expected (%u):\n", vcpu, first, want.size());
    for (const ExpectedReport* e : want) absl::StrAppend(&problems, "    ", e->ToLine(), "\n");
    absl::StrAppendFormat(&problems, "  the guest reported (%u):\n", have.size());
    for (const WitnessReport* r : have) absl::StrAppend(&problems, "    ", r->line, "\n");
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("the guest's reports differ from the expectation:\n", problems));
}

}  // namespace vexstate::replay
