#include "core/run_info.h"

#include <unistd.h>

#include <ctime>
#include <fstream>
#include <string>
#include <thread>

#include "git_commit.h"  // generated at build time: SPENSE_GIT_COMMIT

namespace spense {

namespace {

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

}  // namespace

nlohmann::json run_info() {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    std::time_t now = std::time(nullptr);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    return {{"spense_commit", SPENSE_GIT_COMMIT},
            {"time_utc", when},
            {"host", host},
            {"cpu", cpu_model()},
            {"hardware_threads", std::thread::hardware_concurrency()}};
}

}  // namespace spense
