// Must not compile: a task result the host waits for cannot be a view.
#include <ferry/ferry.hpp>

ferry::BytesView first_half(ferry::BytesView b) { return {b.data(), b.size() / 2}; }

int main() {
  ferry::Executor ex;
  return static_cast<int>(ex.submit(first_half, std::string("abcd")).get().size());
}
