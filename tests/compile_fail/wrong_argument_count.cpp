// Must not compile: submit with fewer arguments than the task takes.
#include <ferry/ferry.hpp>

int add(int a, int b) { return a + b; }

int main() {
  ferry::Executor ex;
  return ex.submit(add, 1).get();
}
