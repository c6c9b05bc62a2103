// SPDX-License-Identifier: BSD-3-Clause
// A chunk of JSON lines with its place in the input: what `ferry map` submits (not API).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <ferry/executor.hpp>

namespace ferry::detail {

/**
Executor::submit_json of `items` lines that are the inputs `first_input`, `first_input + 1`, ...
of a map over JSON lines (`ferry map`: the index of the chunk's first line in the input, counted
from 0): the call carries `first_input` as a chunk of Executor::map does, so its trace slice has
`first_input` and its error names its input (Error::input_index, what() ending with
" (input N)" or " (inputs N to M)"). The lines must be consecutive inputs: a chunk missing one
(an unreadable line left out) is submitted with plain submit_json.
*/
FERRY_INTERNAL_API Future<std::string> submit_json_chunk(Executor& executor, const TaskRef& task, std::string lines,
                                                         std::uint32_t items, bool keep_going,
                                                         std::size_t first_input);

}  // namespace ferry::detail
