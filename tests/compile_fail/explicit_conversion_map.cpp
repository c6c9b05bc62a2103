// Must not compile: map elements only an explicit constructor converts to the parameter's type.
#include <ferry/ferry.hpp>

#include <cereal/types/vector.hpp>
#include <vector>

std::size_t count_values(std::vector<int> values) { return values.size(); }

int main() {
  ferry::Executor ex;
  const std::vector<int> counts{1, 2, 3};
  return static_cast<int>(ex.map(count_values, counts).size());
}
