// SPDX-License-Identifier: BSD-3-Clause
// A plugin that links a third-party library (samples/zlib_plugin/: ferry_add_plugin(zl ...
// LINK_LIBRARIES ZLIB::ZLIB OUTPUT_DIRECTORY ...)), run through an executor. Its tasks are
// declared in namespace zl, so they are named with it: "zl::crc32", or "zl:zl::crc32" with the
// plugin. A name without the namespace fails with a PluginError that says which name was meant.
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

#include <ferry/ferry.hpp>

#include "zl.hpp"

namespace {
std::string hex(std::uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
}  // namespace

int main(int argc, char** argv) {
  // The zl plugin's directory (its OUTPUT_DIRECTORY): first argument, else $FERRY_PLUGIN_PATH.
  ferry::ExecutorOptions options{.max_workers = 2};
  if (argc > 1) options.plugin_dirs = {argv[1]};
  ferry::Executor ex(options);

  std::string text;
  for (int i = 0; i < 1000; ++i) text += "ferry carries zlib to its workers. ";

  // By function: this host links ferry_plugin_zl (and so zl.hpp's declarations).
  std::uint32_t crc = ex.submit(zl::crc32, text).get();
  std::cout << "zl::crc32 = " << hex(crc) << "\n";
  zl::Packed packed = ex.submit(zl::compress, text, 9).get();
  std::string back = ex.submit(zl::uncompress, packed).get();
  std::cout << "zl::compress: " << text.size() << " -> " << packed.bytes.size()
            << " bytes; zl::uncompress gives " << (back == text ? "the same text" : "OTHER BYTES")
            << "\n";

  // By name: the namespace is part of the task's name, and plugin:task puts the plugin first.
  std::uint32_t by_name = ex.submit<std::uint32_t>("zl::crc32", ferry::BytesView(text)).get();
  std::uint32_t qualified = ex.submit<std::uint32_t>("zl:zl::crc32", ferry::BytesView(text)).get();
  std::cout << "by name \"zl::crc32\" and \"zl:zl::crc32\": "
            << (by_name == crc && qualified == crc ? "the same crc" : "ANOTHER CRC") << "\n";

  // Without the namespace: no such task, and the message names the one that exists.
  try {
    ex.submit<std::uint32_t>("crc32", ferry::BytesView(text)).get();
  } catch (const ferry::PluginError& e) {
    std::cout << "PluginError: " << e.what() << "\n";
  }
}
