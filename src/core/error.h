// Errors: the library throws spense::Error with a one-line message that says what is wrong,
// where (file, tensor, shape), and what to do. Only main() turns errors into exit codes.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace spense {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// cat("a", 1, "b") -> "a1b": builds messages without format-string pitfalls.
template <typename... Args>
std::string cat(Args&&... args) {
    std::ostringstream os;
    (os << ... << std::forward<Args>(args));
    return os.str();
}

template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
    throw Error(cat(std::forward<Args>(args)...));
}

}  // namespace spense

// Invariant checks that stay on in release builds; the message says which invariant broke.
#define SPENSE_CHECK(cond, ...)                                      \
    do {                                                             \
        if (!(cond)) ::spense::fail(__VA_ARGS__);                    \
    } while (0)
