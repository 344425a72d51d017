#include "core/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace spense {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(2) != 0), start_(std::chrono::steady_clock::now()), last_print_(start_) {}

double Progress::elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& detail) {
    auto now = std::chrono::steady_clock::now();
    double since = std::chrono::duration<double>(now - last_print_).count();
    if (since < (tty_ ? 0.2 : 5.0) && done != 1) return;  // the first step always shows, for its ETA
    last_print_ = now;
    print(done, detail, false);
}

double Progress::finish(const std::string& detail) {
    print(total_, detail, true);
    return elapsed();
}

void Progress::print(int64_t done, const std::string& detail, bool final) {
    double t = elapsed();
    std::string line = label_ + " " + std::to_string(done) + "/" + std::to_string(total_);
    if (!detail.empty()) line += "  " + detail;
    line += "  elapsed " + format_duration(t);
    if (!final && done > 0 && done < total_) line += "  ETA " + format_duration(t / double(done) * double(total_ - done));
    if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final ? "\n" : "");
    else std::fprintf(stderr, "%s\n", line.c_str());
    std::fflush(stderr);
}

std::string format_duration(double s) {
    char buf[32];
    if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
    else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
    else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, int(s) % 3600 / 60);
    return buf;
}

}  // namespace spense
