// The message of the spense::Error a call throws, for tests that check what an error says.
#pragma once

#include <functional>
#include <string>

#include "core/error.h"

namespace spense::test {

inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "<no error>";
}

}  // namespace spense::test
