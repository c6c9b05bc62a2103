// Must not compile: an initializer Call with fewer arguments than the task takes.
#include <ferry/ferry.hpp>

void load(const std::string& name, int size) { (void)name, (void)size; }

int main() {
  ferry::ExecutorOptions options{.initializer = ferry::Call(load, "model")};
  return options.initializer.empty() ? 1 : 0;
}
