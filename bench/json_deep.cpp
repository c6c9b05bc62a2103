// SPDX-License-Identifier: BSD-3-Clause
// ferry-json-deep SHAPE MB text|document [N]: one line of arguments read as the worker reads it
// (read_json_arguments: the text archive) or through a document; best of 3, and the peak RSS.
//   tree      Node 250 deep, the rest of MB in leaves at the bottom; reversed: members the
//             other way round (each NVP searched past "children")
//   nest      Nest ([[...]]) 250 deep, leaves at the bottom
//   chains    Nest: a top array of chains, each N levels deep (default 254, the deepest a line takes)
//   rows      std::vector<std::vector<int>>, rows of N numbers (not recursive: the table's cost)
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include <ferry/task.hpp>

namespace fd = ferry::detail;

struct Node {
  int value = 0;
  std::vector<Node> children;
  template <class A>
  void serialize(A& ar) {
    ar(CEREAL_NVP(value), CEREAL_NVP(children));
  }
};
struct Nest {
  std::vector<Nest> inner;
  template <class A>
  void serialize(A& ar) {
    ar(inner);
  }
};

std::string make(const std::string& shape, std::size_t bytes, int n) {
  std::string text = "{\"value0\":";
  auto fill = [&](const std::string& item) {
    for (std::size_t i = 0; text.size() < bytes; ++i) text += (i ? "," : "") + item;
  };
  if (shape == "rows") {
    std::string row = "[1";
    for (int i = 1; i < n; ++i) row += ",1";
    text += "[";
    fill(row + "]");
    return text + "]}";
  }
  const bool nest = shape == "nest" || shape == "chains";
  const std::string open = nest ? "[[" : shape == "reversed" ? "{\"children\":[" : "{\"value\":1,\"children\":[";
  const std::string close = nest ? "]]" : shape == "reversed" ? "],\"value\":1}" : "]}";
  std::string chain;
  for (int i = 0; i < n; ++i) chain += open;
  for (int i = 0; i < n; ++i) chain += close;
  const int depth = shape == "chains" ? 1 : 250;
  for (int i = 0; i < depth; ++i) text += open;
  fill(shape == "chains" ? chain : open + close);
  for (int i = 0; i < depth; ++i) text += close;
  return text + "}";
}

template <class T>
void read(const std::string& line, bool document) {
  std::tuple<T> args;
  if (!document) return fd::read_json_arguments(line, args, std::make_index_sequence<1>{});
  fd::JsonDocument doc;
  std::string error;
  if (!fd::parse_json(line, doc, error)) throw std::runtime_error(error);
  fd::check_json_arguments(doc, 1);
  fd::JsonInputArchive ar(doc);
  fd::read_json_argument_values(ar, args, std::make_index_sequence<1>{});
}

int main(int argc, char** argv) {
  if (argc < 4) return 2;
  const std::string shape = argv[1], reader = argv[3];
  const int n = argc > 4 ? std::atoi(argv[4]) : shape == "rows" ? 10 : 254;
  const std::string line = make(shape, static_cast<std::size_t>(std::atof(argv[2]) * 1e6), n);
  double best = 1e9;
  for (int run = 0; run < 3; ++run) {
    const auto start = std::chrono::steady_clock::now();
    if (shape == "nest" || shape == "chains") {
      read<Nest>(line, reader == "document");
    } else if (shape == "rows") {
      read<std::vector<std::vector<int>>>(line, reader == "document");
    } else {
      read<Node>(line, reader == "document");
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("%s %.1f MB %s: %.3f s, peak %.0f MiB\n", shape.c_str(), line.size() / 1e6, reader.c_str(), best,
              usage.ru_maxrss / 1024.0);
}
