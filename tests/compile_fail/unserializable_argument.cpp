// Must not compile: a task argument type without serialize(). The static_assert states the fix.
#include <ferry/ferry.hpp>

struct Opaque {
  int* p;
};
int use(Opaque o) { return *o.p; }

int main() {
  ferry::Executor ex;
  return ex.submit(use, Opaque{nullptr}).get();
}
