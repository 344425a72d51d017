// What produced a result: spense's commit, the machine and the time, for every JSON report.
#pragma once

#include <nlohmann/json.hpp>

namespace spense {

nlohmann::json run_info();

}  // namespace spense
