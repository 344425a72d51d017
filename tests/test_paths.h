// Where tests find their inputs. Fixtures live in the source tree (tests/fixtures); the shared
// models and text live beside the checkout (../shared, or $SPENSE_SHARED); models fetched by
// scripts/fetch_models.sh live in the cache ($SPENSE_CACHE, default ~/.cache/spense).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace spense::test {

inline std::filesystem::path source_dir() { return SPENSE_SOURCE_DIR; }
inline std::filesystem::path fixtures_dir() { return source_dir() / "tests" / "fixtures"; }
inline std::filesystem::path cli_path() { return SPENSE_CLI; }

inline std::filesystem::path shared_dir() {
    if (const char* env = std::getenv("SPENSE_SHARED")) return env;
    return source_dir().parent_path() / "shared";
}

inline std::filesystem::path cache_dir() {
    if (const char* env = std::getenv("SPENSE_CACHE")) return env;
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home ? home : "/tmp") / ".cache" / "spense";
}

inline std::filesystem::path smollm2_gguf() { return cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"; }

// A fresh empty directory under the system temp dir, removed by the caller or left for debugging.
inline std::filesystem::path temp_dir(const std::string& tag) {
    auto dir = std::filesystem::temp_directory_path() / ("spense-test-" + tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

}  // namespace spense::test
