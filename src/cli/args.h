// Command-line options of one subcommand: "--name value" options and "--name" flags, declared
// up front so that --help lists them and a misspelt option is an error, not silently ignored.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace spense::cli {

struct OptionSpec {
    std::string name;  // without the leading "--"
    std::string value_name;  // empty for a flag
    std::string help;
    std::string default_value;  // shown in --help; empty: none
};

class Args {
public:
    // Throws spense::Error for unknown options, missing values or a stray positional argument
    // (beyond `max_positional`).
    Args(std::string command, std::string summary, std::vector<OptionSpec> specs, int argc, char** argv,
         size_t max_positional = 0);

    bool help_requested() const { return help_; }
    std::string usage() const;

    bool flag(const std::string& name) const;
    std::optional<std::string> get(const std::string& name) const;  // value given, or the default
    std::string required(const std::string& name) const;
    int64_t get_int(const std::string& name) const;
    double get_double(const std::string& name) const;
    const std::vector<std::string>& positional() const { return positional_; }

private:
    const OptionSpec& spec(const std::string& name) const;
    std::string command_, summary_;
    std::vector<OptionSpec> specs_;
    std::map<std::string, std::string> values_;
    std::vector<std::string> positional_;
    bool help_ = false;
};

}  // namespace spense::cli
