// SPDX-License-Identifier: BSD-3-Clause
// What the FERRY_WRAP compiler and linker read and run, judged with the one trust check: their
// own lists of the files they read, and the flags that name what no list shows.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <ferry/detail/export.hpp>

namespace ferry::detail {

/**
The files listed in the dependency file gcc or clang writes for -MD (one rule; a space or `#` in
a name escaped with a backslash, `$` doubled, lines continued with a backslash). nullopt when the
text is not exactly one such rule (a name holding a newline breaks the rule, and text follows it;
-MP's empty rules are text too): what was read cannot be told then.
*/
FERRY_INTERNAL_API std::optional<std::vector<std::string>> compiler_list_inputs(const std::string& text);

/**
The files listed in the dependency file a linker writes for --dependency-file=: `<output>:`, one
input per continued line, then an empty rule per input. GNU ld and gold indent by two spaces and
escape nothing; lld indents by one and escapes as gcc does. nullopt when the text is not that
(its empty rules must repeat the inputs, in order): a name with a newline, or a misread escape,
shows there.
*/
FERRY_INTERNAL_API std::optional<std::vector<std::string>> linker_list_inputs(const std::string& text,
                                                                          const std::string& output);

/**
Why one of `inputs` (listed by the compiler or linker) could have been written by another user:
"" when every one passes the trust check. A relative name is `cwd`'s (the compiler runs there).
Each must exist, but for those in `scratch` (the private directory the compiler gets as TMPDIR,
where its temporary object is gone by the time of the check): a name that does not is a misread
list. An empty list is a reason too.
*/
FERRY_INTERNAL_API std::string untrusted_input(const std::vector<std::string>& inputs, const std::filesystem::path& cwd,
                            const std::filesystem::path& scratch);

/**
Why the compiler arguments `args` (flags or libraries, as WrapOptions holds them) could make the
compiler or linker run, load or read something no list of its names, or that another user could
have changed: "" when none. An allowlist: macros (-D, -U), -include and -imacros (read and
listed; ferry's prelude is the first -include, so no precompiled header replaces them), libraries
by name (-l) or path (.a, .so, .o: read and listed), -std=, -O*, -g*, warnings (-W without a
comma), machine options (-m, not -mllvm), -f options without a value (not those of modules and
precompiled headers) and a list with one (-fvisibility=, -fsanitize=, -flto=...), -fuse-ld= by
name, and linker options of a list (-O1, --as-needed, -z KEY, -rpath, --version-script...).
Directories searched (-I, -isystem, -iquote, -idirafter, -L, --sysroot=) are judged as final ones:
a precompiled header or a header another user adds to one would be used. Relative paths are
`cwd`'s. Anything else (-B, -specs, -fplugin, -wrapper, @file, -Xclang, -Wp, -x, a source
file...) is refused, unless `allow_unknown` (FERRY_ALLOW_UNSAFE_PLUGINS).
*/
FERRY_INTERNAL_API std::string untrusted_compiler_flag(const std::vector<std::string>& args,
                                                       const std::filesystem::path& cwd, bool allow_unknown = false);

}  // namespace ferry::detail
