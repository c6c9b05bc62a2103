// SPDX-License-Identifier: BSD-3-Clause
// An out-of-tree ferry plugin, built with find_package(ferry) and ferry_add_plugin.
#include "external.hpp"

#include <cctype>

int triple(int x) { return 3 * x; }
std::string shout(const std::string& s) {
  std::string out = s;
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out + "!";
}

FERRY_TASK(triple);
FERRY_TASK(shout);
