// SPDX-License-Identifier: BSD-3-Clause
// What the FERRY_WRAP compiler and linker read and run, judged with the one trust check: their
// own lists of the files they read, and the flags that name what no list shows.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
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
Each must exist, but for one in `scratch` (the private directory the compiler gets as TMPDIR,
where its temporary object is gone by the time of the check; a second means the compiler compiled
another source, whose list -MF did not keep): a name that does not is a misread list. A thin
archive is a reason (its members are read unlisted), and so is an empty list.
*/
FERRY_INTERNAL_API std::string untrusted_input(const std::vector<std::string>& inputs, const std::filesystem::path& cwd,
                            const std::filesystem::path& scratch);

/**
Why the compiler arguments `args` (flags or libraries, as WrapOptions holds them) could make the
compiler or linker run, load or read something no list of its names, or that another user could
have changed: "" when none. An allowlist (docs/design.md §9 lists it): macros, -include with its
file apart, libraries by name or path, -std=, -O*, -g forms, warnings, machine options, -f
switches but those that read or write files or take the next argument, a list of -f options
with a value, -fuse-ld= by name, and a list of linker options. A value given apart never starts
with '-' or '@' (the compiler, collect2 and the linkers read `@FILE` as more arguments); a linker
option's value comes from the same -Wl, argument or the -Xlinker right after. Directories
searched (-I, -isystem, -iquote, -idirafter, -L) are judged as final ones, relative ones against
`cwd`. Anything else (-B, -specs, -fplugin, -wrapper, @file, -Xclang, -imacros, --sysroot, -x,
a source file...) is refused, unless `allow_unknown` (FERRY_ALLOW_UNSAFE_PLUGINS).
`*names_relative` is set when a flag names a file or directory by a relative path, or an unknown
flag was let through (it may): what the build reads then depends on the current directory.
*/
FERRY_INTERNAL_API std::string untrusted_compiler_flag(const std::vector<std::string>& args,
                                                       const std::filesystem::path& cwd, bool allow_unknown = false,
                                                       bool* names_relative = nullptr);

/// `flags` without those only the linker uses (-Wl, -Xlinker, -l, -L, libraries by path,
/// -fuse-ld=, -static-lib...): the start of what the prelude is precompiled with (a header's
/// compile given a library or -Wl, ran a link, which failed for want of main), which then also
/// drops the user's -include and relative search directories (prelude_flags).
FERRY_INTERNAL_API std::vector<std::string> compile_flags(const std::vector<std::string>& flags);

/// One file a wrap's build read, as its cache entry remembers it.
struct RecordedInput {
  std::string path;       ///< absolute (a listed relative name joined to the build's directory)
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;  ///< the status change time, which no program sets at will
  std::string key;        ///< file_content_key of its bytes; "-" when it may have changed during the build
};

/// What a wrap's build read (its compiler's and linker's lists): the cache entry is used, and a
/// remembered failure repeated, only while every one of them holds the bytes it had then.
struct InputRecord {
  std::vector<RecordedInput> files;
};

/**
The record of `inputs` (as listed; relative names are `cwd`'s). Files in `scratch` (the private
cache directory: the wrap's own source and temporaries, named by its key) are left out. A file
whose status changed at or after `started` less 100 ms (file times take a coarse clock), or that
cannot be read, is recorded as changed: its bytes now may not be those the build read, and the
next use builds again.
*/
FERRY_INTERNAL_API InputRecord record_inputs(const std::vector<std::string>& inputs, const std::filesystem::path& cwd,
                                             const std::filesystem::path& scratch,
                                             std::chrono::system_clock::time_point started);

/// `record` as text, for a cache entry's .sum or .err file (names length-prefixed: any byte).
FERRY_INTERNAL_API std::string format_input_record(const InputRecord& record);

/// The record at the start of `text`, and in `rest` what follows it; nullopt when `text` does not
/// start with a whole, well-formed record (an older cache's entry, a cut or edited file).
FERRY_INTERNAL_API std::optional<InputRecord> parse_input_record(std::string_view text, std::string_view* rest = nullptr);

/// "" when every file of `record` still holds the bytes it had (the same size, modification and
/// status change times, or else the same content key), else which changed and how.
FERRY_INTERNAL_API std::string changed_input(const InputRecord& record);

}  // namespace ferry::detail
