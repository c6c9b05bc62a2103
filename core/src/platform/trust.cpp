// SPDX-License-Identifier: BSD-3-Clause
// The trust check: a path is walked from `/` one component at a time, following symbolic links
// by hand, so that every directory the kernel would pass through is seen (a link's own directory,
// the link's owner, then its target's whole way), as ssh's StrictModes and secure_path checks do.
#include "platform/trust.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ferry/errors.hpp>

#include "platform/config.hpp"
#include "platform/debug.hpp"

namespace ferry::detail {

namespace fs = std::filesystem;

namespace {

constexpr int max_links = 40;  // as the kernel's MAXSYMLINKS

/// Appends the components of `p` that matter ("" and "." do not) to the front of `remaining`.
void push_front_components(std::deque<std::string>& remaining, const fs::path& p) {
  std::deque<std::string> parts;
  for (const auto& c : p.relative_path()) {
    std::string s = c.string();
    if (!s.empty() && s != ".") parts.push_back(std::move(s));
  }
  remaining.insert(remaining.begin(), parts.begin(), parts.end());
}

/// Whether only `owner` (and root) can act as a member of group `gid`: a user private group, as
/// Debian makes for every user (with umask 002, so that what users create is group-writable). It
/// is when `gid` is the owner's primary group, the group lists no member but the owner, and no
/// other account the system lists has it as its primary group. Unknown (an account or group that
/// cannot be read) is not private. The same allowance as Debian's OpenSSH makes for StrictModes.
bool group_private_lookup(gid_t gid, uid_t owner) {
  // The reentrant lookups say ERANGE when an entry does not fit the buffer: grow it and ask again
  // (up to 16 MiB; past that, unknown).
  std::vector<char> buf(16384);
  auto ask = [&buf](auto&& lookup) {
    int rc;
    while ((rc = lookup()) == ERANGE && buf.size() < (std::size_t{1} << 24)) buf.resize(buf.size() * 2);
    return rc;
  };
  struct passwd pw {}, *pw_found = nullptr;
  if (ask([&] { return ::getpwuid_r(owner, &pw, buf.data(), buf.size(), &pw_found); }) != 0 || !pw_found)
    return false;
  if (pw.pw_gid != gid) return false;
  const std::string name = pw.pw_name;
  struct group gr {}, *gr_found = nullptr;
  if (ask([&] { return ::getgrgid_r(gid, &gr, buf.data(), buf.size(), &gr_found); }) != 0 || !gr_found)
    return false;
  for (char** m = gr.gr_mem; m && *m; ++m)
    if (name != *m) return false;
  // Another account whose primary group this is acts in it too. (The enumeration's position is
  // one per process: the caller holds a lock, so two checks do not interleave theirs.)
  bool alone = true;
  ::setpwent();
  for (;;) {
    struct passwd other {}, *got = nullptr;
    int rc = ask([&] { return ::getpwent_r(&other, buf.data(), buf.size(), &got); });
    if (rc == ENOENT || (rc == 0 && !got)) break;  // the end of the list
    if (rc != 0 || (other.pw_gid == gid && other.pw_uid != owner)) {
      alone = false;  // someone else's, or an entry that cannot be read: not known to be private
      break;
    }
  }
  ::endpwent();
  return alone;
}

/// group_private_lookup, remembered for a few seconds unless /etc/passwd or /etc/group changes:
/// every `TaskRef` submission is checked (PluginIndex::check_safe), and a lookup reads the whole
/// password database.
bool group_private_to(gid_t gid, uid_t owner) {
  struct Verdict {
    bool private_group;
    std::chrono::steady_clock::time_point at;
    struct timespec passwd, group;
  };
  auto changed = [](const char* file) {
    struct stat st {};
    return ::stat(file, &st) == 0 ? st.st_mtim : timespec{};
  };
  static std::mutex mu;
  static std::map<std::pair<gid_t, uid_t>, Verdict> verdicts;
  std::lock_guard<std::mutex> lock(mu);
  const auto now = std::chrono::steady_clock::now();
  const timespec passwd = changed("/etc/passwd"), group = changed("/etc/group");
  auto same = [](const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; };
  auto key = std::make_pair(gid, owner);
  if (auto it = verdicts.find(key); it != verdicts.end() && now - it->second.at < std::chrono::seconds(5) &&
                                    same(it->second.passwd, passwd) && same(it->second.group, group))
    return it->second.private_group;
  bool verdict = group_private_lookup(gid, owner);
  verdicts[key] = Verdict{verdict, now, passwd, group};
  return verdict;
}

/// Who besides the owner may write `path` through its POSIX access ACL (system.posix_acl_access),
/// or "" when no one: with an ACL the mode's group bits are its mask, and a named user or group
/// may write under a mask that allows it (a directory shared with `setfacl -m g:team:rwx`, whose
/// files inherit that entry, shows as 0775 with the owner's own group). The kernel's format:
/// a u32 version (2), then entries of u16 tag, u16 permissions, u32 id.
std::string acl_writers(const char* path, const struct stat& st) {
  unsigned char acl[4 + 8 * 64];
  ssize_t n = ::lgetxattr(path, "system.posix_acl_access", acl, sizeof acl);
  if (n < 0) {
    if (errno == ENODATA || errno == ENOTSUP) return {};
    return errno == ERANGE ? "an access ACL of more than 64 entries" : std::string("an unreadable access ACL (") + std::strerror(errno) + ")";
  }
  auto u16 = [&](std::size_t at) { return static_cast<unsigned>(acl[at] | (acl[at + 1] << 8)); };
  auto u32 = [&](std::size_t at) { return static_cast<std::uint32_t>(u16(at) | (u16(at + 2) << 16)); };
  if (n < 4 || (n - 4) % 8 != 0 || u32(0) != 2) return "an access ACL in a format this ferry cannot read";
  constexpr unsigned user = 0x02, group_obj = 0x04, group = 0x08, write = 0x02;
  for (std::size_t at = 4; at + 8 <= static_cast<std::size_t>(n); at += 8) {
    const unsigned tag = u16(at), perm = u16(at + 2);
    const std::uint32_t id = u32(at + 4);
    if (!(perm & write)) continue;
    // Writers the rule allows anyway: the owner, this user, root, and their private groups.
    const auto allowed_user = [&](std::uint32_t u) { return u == st.st_uid || u == ::geteuid() || u == 0; };
    const auto allowed_group = [&](gid_t g) { return group_private_to(g, st.st_uid) || group_private_to(g, ::geteuid()); };
    if (tag == user && !allowed_user(id)) return "user " + std::to_string(id) + " through its ACL";
    if (tag == group && !allowed_group(static_cast<gid_t>(id)))
      return "group " + std::to_string(id) + " through its ACL";
    if (tag == group_obj && !allowed_group(st.st_gid))
      return "group " + std::to_string(st.st_gid) + " through its ACL";
  }
  return {};
}

/// Why `st` (the `final` component, or a directory on the way, at `path`) is not trusted; ""
/// when it is. `me`: the effective uid (asked once per walk: a system call each time it was
/// asked per component was half of a lookup's cost).
std::string judge(const char* path, const struct stat& st, bool final, uid_t me) {
  if (st.st_uid != me && st.st_uid != 0)
    return "owned by uid " + std::to_string(st.st_uid) + ", neither this user (uid " +
           std::to_string(me) + ") nor root";
  // Writable by the group is writable by its owner alone when the group is the owner's private
  // group (group_private_to), looked up only for a component that is group-writable; and, the
  // group bits being an ACL's mask when it has one, when its ACL lets no one else write.
  bool by_group = (st.st_mode & S_IWGRP) != 0;
  if (by_group && !S_ISLNK(st.st_mode) && !(!final && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX))) {
    if (std::string who = acl_writers(path, st); !who.empty()) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return std::string("writable by ") + who + " (mode " + mode + ")";
    }
  }
  bool writable = (st.st_mode & S_IWOTH) != 0 || (by_group && !group_private_to(st.st_gid, st.st_uid));
  // A sticky directory on the way (as /tmp) lets others add entries but not replace ours; the
  // entry we go through next is checked in its turn. The final directory itself must not be
  // open to others: whatever they add there (a plugin, a cache entry) would be taken as ours.
  bool sticky_on_the_way = !final && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
  if (writable && !sticky_on_the_way) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    std::string why = std::string("writable by group or others (mode ") + mode;
    if (by_group && !(st.st_mode & S_IWOTH))
      why += "; group " + std::to_string(st.st_gid) + " is not uid " + std::to_string(st.st_uid) +
             "'s own";
    return why + ")";
  }
  return {};
}

std::string missing(int error) {
  return std::string(error == ENOENT ? "missing (" : "unreadable (") + std::strerror(error) + ")";
}

}  // namespace

namespace {

using Seen = ComponentSeen;

Seen seen_of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino), st.st_uid, st.st_gid,
          st.st_mode};
}

/// Where a walk is: `at` (a path without links: each was followed by hand), the links followed
/// so far, and, when `seen` is given, what it saw of each component on the way.
struct WalkState {
  fs::path at = "/";
  int links = 0;
  std::vector<Seen>* seen = nullptr;
};

/// The walk from `state` through `remaining` (components: no "" or "."): each is looked at with
/// `lstat` and judged, links followed by hand. `judged_final`: `state.at` was judged as a final
/// component (a walk that ends there judges it so otherwise).
TrustVerdict walk_on(WalkState& state, std::deque<std::string> remaining, bool judged_final, bool directory_final,
                     bool way_only, uid_t me) {
  fs::path& at = state.at;
  int& links = state.links;
  struct stat st {};
  // The final component as named was a link, followed: the directory that holds the file as
  // named has been judged already, and the target's way is judged as any way is.
  bool final_followed = false;
  while (!remaining.empty()) {
    std::string name = std::move(remaining.front());
    remaining.pop_front();
    if (name == "..") {
      at = at.parent_path();  // `at` holds no link: its parent is where ".." leads
      continue;
    }
    fs::path next = at / name;
    if (way_only && remaining.empty()) return {};
    if (::lstat(next.c_str(), &st) != 0) return {next, missing(errno)};
    if (state.seen) state.seen->push_back(seen_of(st));
    if (S_ISLNK(st.st_mode)) {
      // The link's directory (`at`) was checked on the way here. The link itself must be ours or
      // root's: in a sticky directory (as /tmp) another user's link cannot be replaced by us, but
      // its owner can point it elsewhere at any moment, after this check and before the path is
      // used. (A link's own mode bits mean nothing.) Then its target, from the start of the
      // target's own way.
      if (st.st_uid != me && st.st_uid != 0)
        return {next, "a symbolic link owned by uid " + std::to_string(st.st_uid) +
                          ", neither this user (uid " + std::to_string(me) +
                          ") nor root: its owner can point it elsewhere at any time"};
      if (++links > max_links) return {next, "one link too many (a loop of symbolic links?)"};
      if (remaining.empty()) final_followed = true;
      char buf[PATH_MAX];
      ssize_t n = ::readlink(next.c_str(), buf, sizeof buf - 1);
      if (n < 0) return {next, std::string("unreadable (") + std::strerror(errno) + ")"};
      fs::path target(std::string(buf, static_cast<std::size_t>(n)));
      push_front_components(remaining, target);
      if (target.is_absolute()) at = "/";
      continue;
    }
    bool final = remaining.empty();
    // Links on the way to it do not change which directory that is (plugins -> /tmp/open names
    // /tmp/open as the plugin directory).
    const bool holds_the_file = directory_final && !final_followed && remaining.size() == 1;
    if (auto why = judge(next.c_str(), st, final || holds_the_file, me); !why.empty()) return {next, why};
    if (!final && !S_ISDIR(st.st_mode)) return {next, "not a directory"};
    judged_final = final;
    at = std::move(next);
  }
  if (!judged_final && !way_only) {
    // The path ended in ".." (/tmp/x/..) or a link to "." or ".." (/tmp/dot -> .): where it
    // leads was only passed on the way, as a sticky directory may be; it is the final one.
    if (::lstat(at.c_str(), &st) != 0) return {at, missing(errno)};
    if (state.seen) state.seen->push_back(seen_of(st));
    if (auto why = judge(at.c_str(), st, true, me); !why.empty()) return {at, why};
  }
  return {};
}

/// trust_verdict's walk of `path` from `/` (from the current directory's own way for a relative
/// one); `way_only`: the final component is not judged (nor needed). `state` is where it ended.
TrustVerdict walk(const fs::path& path, bool directory_final, bool way_only, WalkState& state) {
  if (path.empty()) return {path, "an empty path"};
  std::deque<std::string> remaining;
  if (path.is_relative()) {
    std::error_code ec;
    fs::path cwd = fs::current_path(ec);
    if (ec) return {path, "relative to a current directory that cannot be read (" + ec.message() + ")"};
    push_front_components(remaining, path);
    push_front_components(remaining, cwd);
  } else {
    push_front_components(remaining, path);
  }
  state.at = "/";
  state.links = 0;
  const uid_t me = ::geteuid();
  struct stat st {};
  if (::lstat("/", &st) != 0) return {state.at, missing(errno)};
  if (state.seen) state.seen->push_back(seen_of(st));
  const bool judged_final = remaining.empty();
  if (auto why = judge("/", st, judged_final, me); !why.empty()) return {state.at, why};
  return walk_on(state, std::move(remaining), judged_final, directory_final, way_only, me);
}

TrustVerdict walk(const fs::path& path, bool directory_final, bool way_only) {
  WalkState state;
  return walk(path, directory_final, way_only, state);
}

}  // namespace

TrustVerdict trust_verdict(const fs::path& path, bool directory_final) {
  return walk(path, directory_final, false);
}

namespace {
std::string reason_of(const TrustVerdict& v, const fs::path& path) {
  if (v) return {};
  if (v.at == path) return path.string() + " is " + v.why;
  return v.at.string() + " (on the way to " + path.string() + ") is " + v.why;
}
}  // namespace

std::string untrusted_reason(const fs::path& path) { return reason_of(trust_verdict(path), path); }

DirectoryTrust::DirectoryTrust(fs::path dir) : dir_(std::move(dir)) {
  WalkState state;
  state.seen = &way_;
  const TrustVerdict v = walk(dir_, false, false, state);
  reason_ = reason_of(v, dir_);
  // Its files' walks resume at `at` only when it is a directory that passed: a walk that
  // failed or ended at another file leaves them to walk from `/` as ever.
  if (v && !way_.empty() && S_ISDIR(way_.back().mode)) {
    at_ = std::move(state.at);
    links_ = state.links;
  }
}

std::string DirectoryTrust::untrusted_reason_of(std::string_view name) const {
  const fs::path file = dir_ / name;
  if (at_.empty() || name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos)
    return untrusted_reason(file);
  // dir_ / name walked from `/` passes through what the directory's walk passed (its last
  // component judged on the way now, which passing as a final one implies) to at_, with
  // links_ links followed: the walk goes on from there, as it would have.
  WalkState state;
  state.at = at_;
  state.links = links_;
  const TrustVerdict v = walk_on(state, {std::string(name)}, false, false, false, ::geteuid());
  return reason_of(v, file);
}

bool DirectoryTrust::still_holds() const {
  if (at_.empty()) return false;
  std::vector<ComponentSeen> again;
  WalkState state;
  state.seen = &again;
  const TrustVerdict v = walk(dir_, false, false, state);
  return v && state.at == at_ && state.links == links_ && again == way_;
}

std::string untrusted_way_reason(const fs::path& path) { return reason_of(walk(path, false, true), path); }

std::string untrusted_reason_if_present(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 || errno != ENOENT) return untrusted_reason(path);
  // The nearest directory on the way that exists is where another user would start creating it.
  std::error_code ec;
  fs::path dir = fs::absolute(path, ec).parent_path();
  while (dir.has_relative_path() && ::lstat(dir.c_str(), &st) != 0 && errno == ENOENT) dir = dir.parent_path();
  if (std::string why = untrusted_reason(dir); !why.empty())
    return path.string() + " is missing, and another user could create it: " + why;
  return {};
}

void require_trusted(const fs::path& path, bool directory_final) {
  TrustVerdict v = trust_verdict(path, directory_final);
  if (!v) throw PluginError::unsafe(v.at.string(), v.why, path.string());
}

bool create_private_directories(const fs::path& dir, std::error_code& ec, std::string* why_not) {
  ec.clear();
  fs::path at;
  bool way_checked = false;
  for (const auto& part : dir) {
    at /= part;
    if (part.empty() || part == "/" || part == "." || part == "..") continue;
    struct stat st {};
    if (::lstat(at.c_str(), &st) == 0) continue;
    // The first directory to make: nothing is made through another user's link, nor in a
    // directory another user could swap (what follows is ours, made here).
    if (!way_checked) {
      if (std::string why = untrusted_way_reason(at); !why.empty()) {
        ec = std::make_error_code(std::errc::permission_denied);
        if (why_not) *why_not = std::move(why);
        return false;
      }
      way_checked = true;
    }
    if (::mkdir(at.c_str(), 0700) == 0 || errno == EEXIST) continue;
    ec = std::error_code(errno, std::generic_category());
    return false;
  }
  return true;
}

bool unsafe_allowed_by_environment() { return Config::read().allow_unsafe_plugins; }

namespace {

/// Why an entry holding a control character is left out, whatever the variable: the MPI hub
/// gives a spawned agent what is kept as "NAME=value" lines of one MPI_Info value, where a newline
/// in a kept entry (a missing file nobody else can create: /home/me/x.so<newline>LD_PRELOAD=/open/x.so)
/// began a line of its own, setting the variable to what was never judged. No path of a library,
/// search directory or program needs one.
constexpr const char* control_reason = "it holds a control character (a newline would begin a line of its own "
                                       "where the kept value is written as lines)";

bool holds_control_character(std::string_view entry) {
  return std::any_of(entry.begin(), entry.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

/// `entry` for the log: its control characters as \xNN.
std::string shown(std::string_view entry) {
  std::string out;
  for (const char c : entry) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u != 0x7f) {
      out += c;
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    }
  }
  return out;
}

/// The one filter of a list in an environment variable: of `name`'s entries in `env` (split at
/// any of `separators`), keeps those `reason` passes ("" for one to keep), joined with ':', and
/// logs each left out with why. An entry holding a control character is left out before
/// `reason` is asked (control_reason). An empty entry is skipped without a word when `skip_empty`
/// (the program reading it skips it too), else judged. When none is kept, the variable becomes
/// `fallback`, or is removed when `fallback` is empty. Returns whether `env` held the variable.
template <class Reason>
bool keep_entries(std::vector<std::string>& env, std::string_view name, std::string_view separators, bool skip_empty,
                  const char* who, std::string_view fallback, Reason&& reason) {
  const std::string prefix = std::string(name) + "=";
  const auto it = std::find_if(env.begin(), env.end(), [&](const std::string& e) { return e.starts_with(prefix); });
  if (it == env.end()) return false;
  std::string kept;
  std::string_view rest = std::string_view(*it).substr(prefix.size());
  for (;;) {
    const std::size_t end = rest.find_first_of(separators);
    const std::string entry(rest.substr(0, end));
    if (!entry.empty() || !skip_empty) {
      if (const std::string why = holds_control_character(entry) ? control_reason : reason(entry); why.empty())
        kept += (kept.empty() ? "" : ":") + entry;
      else
        debug_log("%s: %s leaves out '%s': %s", who, std::string(name).c_str(), shown(entry).c_str(), why.c_str());
    }
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end + 1);
  }
  if (!kept.empty() || !fallback.empty()) {
    *it = prefix + (kept.empty() ? std::string(fallback) : kept);
  } else {
    env.erase(it);
  }
  return true;
}

/// What a relative path in the environment is: whatever the directory a program starts in (or
/// is in when it reads the variable) holds under that name.
constexpr const char* relative_reason = "it is not absolute (the directory the program is in decides what it names)";

/// Why the loader must not be given `entry` of LD_PRELOAD's or LD_AUDIT's list; "" when it may.
/// `library` judges what a present file's own search path makes the loader read.
std::string library_entry_reason(const std::string& entry, TrustVerdict (*library)(const fs::path&)) {
  // A name: looked for where every library the program needs is (keep_trusted_loader_environment).
  if (entry.find('/') == std::string::npos) return {};
  if (entry.front() != '/') return relative_reason;
  // The loader expands these in a path (as in a RUNPATH), to a place the check did not see.
  if (entry.find('$') != std::string::npos)
    return "it holds a token the loader expands ($ORIGIN, $LIB, $PLATFORM): the file judged would not be the one "
           "loaded";
  if (std::string why = untrusted_reason_if_present(entry); !why.empty()) return why;
  struct stat st {};
  if (::lstat(entry.c_str(), &st) != 0) return {};  // missing where nobody else can create it
  return library(entry).why;
}

/// Why `dir` of GCONV_PATH must not be read; "" when it may. glibc reads the configuration file
/// gconv-modules there and, in gconv-modules.d (2.34 and later), every file whose name ends in
/// ".conf"; they name the modules iconv_open loads (by a path of their own, or beside them): the
/// directory, that file, that directory and each of those files must be ones nobody else can
/// change (a .conf file writable by others let them add a module line).
std::string gconv_directory_reason(const std::string& dir) {
  if (dir.empty() || dir.front() != '/') return relative_reason;
  if (std::string why = untrusted_reason(dir); !why.empty()) return why;
  if (std::string why = untrusted_reason_if_present(fs::path(dir) / "gconv-modules"); !why.empty()) return why;
  const fs::path conf_dir = fs::path(dir) / "gconv-modules.d";
  if (std::string why = untrusted_reason_if_present(conf_dir); !why.empty()) return why;
  struct stat st {};
  if (::stat(conf_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return {};  // glibc reads none there
  std::error_code ec;
  for (fs::directory_iterator it(conf_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= 5 || !name.ends_with(".conf")) continue;  // glibc reads only these
    if (std::string why = untrusted_reason(it->path()); !why.empty()) return why;
  }
  if (ec) return conf_dir.string() + " cannot be listed (" + ec.message() + "): its .conf files cannot be judged";
  return {};
}

/// Why `dir` of a search path must not be searched; "" when it may: it must be absolute (an empty
/// or relative one is the directory the program is in) and pass `judge`.
std::string search_directory_reason(const std::string& dir, std::string (*judge)(const fs::path&)) {
  if (dir.empty()) return "an empty element is the current directory";
  if (dir.front() != '/') return relative_reason;
  return judge(dir);
}

}  // namespace

bool keep_trusted_search_path(std::vector<std::string>& env, std::string_view name, const char* who,
                              std::string_view fallback, std::string (*judge)(const fs::path&)) {
  if (!judge) judge = untrusted_reason;
  // execvp splits PATH at ':' alone and takes each directory as it is written.
  return keep_entries(env, name, ":", false, who, fallback,
                      [&](const std::string& dir) { return search_directory_reason(dir, judge); });
}

// glibc's list of the variables a setuid program ignores (sysdeps/generic/unsecvars.h), one by
// one, for a process of the user's own that ferry starts:
//  - judged here, they load code: LD_LIBRARY_PATH, LD_PRELOAD, LD_AUDIT, GCONV_PATH (iconv
//    modules); LD_ORIGIN_PATH decides the directories a RUNPATH with $ORIGIN names: never kept.
//  - left as they are, no code is loaded from what they name:
//    LD_DEBUG, LD_SHOW_AUXV (print to stderr), LD_DYNAMIC_WEAK, LD_USE_LOAD_BIAS, LD_BIND_NOW
//    (how symbols bind), LD_HWCAP_MASK and GLIBC_TUNABLES (which capability subdirectory of a
//    search directory is tried: each is judged with its directory, untrusted_search_directory;
//    malloc and cpu settings);
//    LD_DEBUG_OUTPUT, LD_PROFILE and LD_PROFILE_OUTPUT, MALLOC_TRACE: files written for the
//    debugging the user turns on (LD_DEBUG_OUTPUT's file is opened with O_NOFOLLOW, the way
//    to it not judged; MALLOC_TRACE needs libc_malloc_debug.so preloaded, which LD_PRELOAD's
//    judge sees);
//    LOCPATH, NLSPATH, TZDIR (locales, message catalogues, time zones), HOSTALIASES,
//    LOCALDOMAIN, RES_OPTIONS, RESOLV_HOST_CONF (the resolver's): data the user chose;
//    GETCONF_DIR: read by the getconf program alone, which ferry never runs; NIS_PATH: NIS+,
//    gone from glibc; TMPDIR: where temporary files go (a sandbox sets its own).
std::vector<std::string> keep_trusted_loader_environment(std::vector<std::string>& env, const char* who,
                                                         std::string (*search_directory)(const fs::path&),
                                                         TrustVerdict (*library)(const fs::path&)) {
  std::vector<std::string> held;
  auto judged = [&](const char* name, bool present) {
    if (present) held.emplace_back(name);
  };
  // glibc's rtld splits LD_LIBRARY_PATH at ':' and ';' (2.36, checked with LD_DEBUG=libs), and
  // expands $ORIGIN, $LIB and $PLATFORM in it: a directory holding a '$' is not the one judged.
  judged("LD_LIBRARY_PATH", keep_entries(env, "LD_LIBRARY_PATH", ":;", false, who, {}, [&](const std::string& dir) {
           if (dir.find('$') != std::string::npos)
             return std::string("it holds a token the loader expands ($ORIGIN, $LIB, $PLATFORM): the directory "
                                "judged would not be the one searched");
           return search_directory_reason(dir, search_directory ? search_directory : untrusted_reason);
         }));
  // glibc's rtld splits LD_PRELOAD at spaces and colons, LD_AUDIT at colons only.
  const auto library_reason = [&](const std::string& entry) { return library_entry_reason(entry, library); };
  judged("LD_PRELOAD", keep_entries(env, "LD_PRELOAD", " :", true, who, {}, library_reason));
  judged("LD_AUDIT", keep_entries(env, "LD_AUDIT", ":", true, who, {}, library_reason));
  judged("GCONV_PATH", keep_entries(env, "GCONV_PATH", ":", true, who, {}, gconv_directory_reason));
  // The whole value is one directory (glibc does not split it).
  judged("LD_ORIGIN_PATH", keep_entries(env, "LD_ORIGIN_PATH", "", false, who, {}, [](const std::string&) {
           return std::string("the loader would take it for the program's own directory ($ORIGIN, where "
                              "/proc/self/exe cannot be read), and load from the places the program's RUNPATH "
                              "names from there, which are not judged");
         }));
  return held;
}

}  // namespace ferry::detail
