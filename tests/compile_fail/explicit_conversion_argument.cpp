// Must not compile: an argument only an explicit constructor converts to the parameter's type.
// count_values(5) does not compile either; submit once built a vector of five zeros from it
// (and one of 5,000,000,000 from 5'000'000'000L).
#include <ferry/ferry.hpp>

#include <cereal/types/vector.hpp>
#include <vector>

std::size_t count_values(std::vector<int> values) { return values.size(); }

int main() {
  ferry::Executor ex;
  return static_cast<int>(ex.submit(count_values, 5).get());
}
