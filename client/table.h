// A plain-text table: left-aligned columns separated by two spaces, no trailing
// blanks.
//
// Contract: pure function, safe from any thread. Rows shorter than the header
// are padded with empty cells.
#ifndef VEXSTATE_CLIENT_TABLE_H_
#define VEXSTATE_CLIENT_TABLE_H_

#include <string>
#include <vector>

namespace vexstate::client {

// The header line, then one line per row; every line ends with '\n'.
std::string FormatTable(const std::vector<std::string>& header,
                        const std::vector<std::vector<std::string>>& rows);
// The same without a header, e.g. "key  value" lines with the values aligned.
std::string FormatAligned(const std::vector<std::vector<std::string>>& rows);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_TABLE_H_
