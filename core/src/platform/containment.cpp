// TEMPORARY STUB (not committed): replaced by the worker-side branch.
#include "platform/containment.hpp"
namespace ferry::detail {
const ContainmentSupport& containment_support() { static ContainmentSupport s{true,true,true,true,7,true,true,"PID namespace","pids cgroup"}; return s; }
std::string containment_missing(const ContainmentSupport&, bool, bool, bool) { return ""; }
}
