// SPDX-License-Identifier: BSD-3-Clause
// The model plugin's tasks: state in this library, set up by load_model, read by the others.
#include "model.hpp"

#include <unistd.h>

#include <cmath>
#include <stdexcept>

namespace {

/// The worker's model: one per worker process, since each worker loads this library once.
struct Model {
  std::string name;
  std::vector<double> weights;  // coefficients of a polynomial, lowest degree first
  int loads = 0;
};
Model the_model;

}  // namespace

void load_model(const std::string& name, int size) {
  if (name.empty()) throw std::invalid_argument("load_model: the model needs a name");
  if (size <= 0) throw std::invalid_argument("load_model: the model needs at least one weight");
  // Stands for reading weights from a file or a server: done once per worker, not per task.
  std::vector<double> w(static_cast<std::size_t>(size));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = 1.0 / static_cast<double>(i + 1);
  the_model.name = name;
  the_model.weights = std::move(w);
  ++the_model.loads;
}

double predict(double x) {
  if (the_model.weights.empty())
    throw std::logic_error("predict: no model loaded in this worker (an executor without "
                           "the load_model initializer?)");
  double y = 0.0;  // Horner's rule, highest degree first
  for (auto it = the_model.weights.rbegin(); it != the_model.weights.rend(); ++it) y = y * x + *it;
  return y;
}

model::Description describe_model() {
  return {static_cast<int>(::getpid()), the_model.name, the_model.weights.size(), the_model.loads};
}

FERRY_TASK(load_model);
FERRY_TASK(predict);
FERRY_TASK(describe_model);
