// SPDX-License-Identifier: BSD-3-Clause
// What the README's C++ fragments take for granted: ferry's header, the bundled plugins' tasks
// (plugins/math, crash, model: square, add, scale, spin_forever, load_model, predict...), and the
// variables and helpers a fragment uses without declaring them (an executor `ex`, `inputs`, ...).
// Fragments are compiled, not run (tests/docs/CMakeLists.txt): the variables are only declared.
// Each fragment gets a namespace of its own, so its declarations hide these.
#pragma once

#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <ranges>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <ferry/ferry.hpp>

#include "crash.hpp"  // spin_forever
#include "math.hpp"   // square, add, scale, math::Vec2
#include "model.hpp"  // load_model, predict

using namespace std::chrono_literals;

namespace readme {
/// The return type of a fragment that co_awaits ("in any C++20 coroutine"): eager, result-less.
struct Coroutine {
  struct promise_type {
    Coroutine get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};
}  // namespace readme

/// A type a task returns, serializable as the README assumes (sandbox section).
struct Image {
  std::vector<unsigned char> pixels;
  template <class Archive> void serialize(Archive& ar) { ar(pixels); }
};

// Tasks of plugins the README names but does not show.
std::vector<char> decode(const std::string& file);
std::vector<char> compress(const std::string& file, int level);
int work(int item);
Image decode_thumbnail(const std::string& path);
void use(int value);

// Variables the fragments use as if the surrounding program had them.
extern ferry::Executor ex;
extern std::vector<int> inputs;
extern std::vector<int> large_list;
extern std::vector<ferry::Future<int>> futures;
extern std::vector<ferry::Future<int>> fs;
extern ferry::Future<int> f;
extern ferry::Future<int> g;
extern ferry::Future<int> spinning;
extern int total;
extern std::vector<std::string> files;
extern std::vector<double> xs;
extern std::string path;
extern std::string text;
extern std::vector<char> big_vector;
extern std::string big_string;
