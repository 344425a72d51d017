// Progress lines for long work: "label i/n  detail  elapsed 12s  ETA 40s" on stderr, rewritten in
// place on a terminal and printed at most every few seconds otherwise, so that logs stay short.
#pragma once

#include <chrono>
#include <string>

namespace spense {

class Progress {
public:
    Progress(std::string label, int64_t total);
    // Reports that `done` of `total` steps are complete; `detail` is shown beside the count.
    void update(int64_t done, const std::string& detail = {});
    // Ends the line; returns the elapsed seconds.
    double finish(const std::string& detail = {});
    double elapsed() const;

private:
    void print(int64_t done, const std::string& detail, bool final);
    std::string label_;
    int64_t total_;
    bool tty_;
    std::chrono::steady_clock::time_point start_, last_print_;
};

// "1h02m", "3m05s", "12.3s"
std::string format_duration(double seconds);

}  // namespace spense
