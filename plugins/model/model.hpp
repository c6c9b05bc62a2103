// SPDX-License-Identifier: BSD-3-Clause
// The model plugin: a "model" loaded once per worker by ExecutorOptions::initializer, used by tasks.
#pragma once

#include <string>
#include <vector>

#include <ferry/task.hpp>

namespace model {

/// What a worker's model is, as a task reports it.
struct Description {
  int pid = 0;            // the worker's
  std::string name;       // as load_model was given it
  std::size_t size = 0;   // number of weights
  int loads = 0;          // how many times load_model ran in this worker
  template <class Archive>
  void serialize(Archive& ar) {
    ar(pid, name, size, loads);
  }
};

}  // namespace model

/// The initializer: builds the worker's model, `size` weights of a polynomial named `name` (the
/// expensive set-up a real model or a database connection would be). Throws std::invalid_argument
/// for an empty name or a size of 0.
FERRY_EXPORT void load_model(const std::string& name, int size);
/// Evaluates the worker's model at x. Throws std::logic_error when no model was loaded (an
/// executor without the initializer).
FERRY_EXPORT double predict(double x);
/// The worker's model, described.
FERRY_EXPORT model::Description describe_model();
