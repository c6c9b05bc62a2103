// Must not compile: a ferry::Call argument only an explicit constructor converts to the
// parameter's type.
#include <ferry/ferry.hpp>

#include <cereal/types/vector.hpp>
#include <vector>

void load_sizes(std::vector<int> sizes) { (void)sizes; }

int main() {
  ferry::Call init(load_sizes, 5);
  (void)init;
}
