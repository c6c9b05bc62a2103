// SPDX-License-Identifier: BSD-3-Clause
// Submit by task name: the host does not link the plugin. ferry finds the task in the plugin
// directories (ExecutorOptions::plugin_dirs, then $FERRY_PLUGIN_PATH) by reading the plugins'
// manifests, and the worker checks the signature before the call.
#include <iostream>
#include <string>
#include <vector>

#include <ferry/ferry.hpp>

int main(int argc, char** argv) {
  // The plugin directory: first argument, or $FERRY_PLUGIN_PATH when none is given.
  ferry::ExecutorOptions options{.max_workers = 2};
  if (argc > 1) options.plugin_dirs = {argv[1]};
  ferry::Executor ex(options);

  // The result type is given; argument types must match the task's parameters.
  std::cout << "square(9) = " << ex.submit<int>("square", 9).get() << "\n";
  std::cout << "sum = " << ex.submit<double>("sum", std::vector<double>{1, 2, 3.5}).get() << "\n";
  // "plugin:task" picks a plugin when two export the same name.
  std::cout << "greet = " << ex.submit<std::string>("math:greet", "ferry").get() << "\n";
  // Or name the library directly.
  std::cout << "add = "
            << ex.submit<int>(ferry::TaskRef{.library = options.plugin_dirs.empty()
                                                            ? "libmath.so"
                                                            : options.plugin_dirs[0] / "libmath.so",
                                             .name = "add"},
                              40, 2)
                   .get()
            << "\n";

  // The JSON interface the ferry command uses: a Future<std::string> of one JSON line per call,
  // each ending in '\n'.
  std::string line = ex.submit_json("add", R"({"value0": 40, "value1": 2})").get();
  std::cout << "submit_json = " << line;  // {"value0":42} and its newline

  // A mismatch is caught before the call: square takes an int, not a double.
  try {
    ex.submit<int>("square", 2.5).get();
  } catch (const ferry::PluginError& e) {
    std::cout << "PluginError: " << e.what() << "\n";
  }
}
