#include "client/table.h"

#include <algorithm>

#include "absl/strings/ascii.h"

namespace vexstate::client {

std::string FormatAligned(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const std::vector<std::string>& row : rows) {
    if (row.size() > widths.size()) widths.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c) {
      widths[c] = std::max(widths[c], row[c].size());
    }
  }
  std::string out;
  for (const std::vector<std::string>& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - row[c].size() + 2, ' ');
    }
    absl::StripTrailingAsciiWhitespace(&line);
    out += line;
    out += '\n';
  }
  return out;
}

std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> all;
  all.reserve(rows.size() + 1);
  all.push_back(header);
  for (const std::vector<std::string>& row : rows) {
    all.push_back(row);
    all.back().resize(std::max(row.size(), header.size()));
  }
  return FormatAligned(all);
}

}  // namespace vexstate::client
