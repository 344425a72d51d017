#include "cli/args.h"

#include <charconv>

#include "core/error.h"

namespace spense::cli {

Args::Args(std::string command, std::string summary, std::vector<OptionSpec> specs, int argc, char** argv,
           size_t max_positional)
    : command_(std::move(command)), summary_(std::move(summary)), specs_(std::move(specs)) {
    for (int i = 0; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            help_ = true;
            continue;
        }
        if (a.rfind("--", 0) != 0) {
            if (positional_.size() >= max_positional) fail("unexpected argument '", a, "' (see spense ", command_, " --help)");
            positional_.push_back(a);
            continue;
        }
        std::string name = a.substr(2), value;
        if (auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        } else if (!spec(name).value_name.empty()) {
            if (i + 1 >= argc) fail("option --", name, " needs a value (", spec(name).value_name, ")");
            value = argv[++i];
        }
        const OptionSpec& s = spec(name);
        if (s.value_name.empty() && !value.empty()) fail("option --", name, " takes no value");
        values_[name] = s.value_name.empty() ? "1" : value;
    }
}

const OptionSpec& Args::spec(const std::string& name) const {
    for (const auto& s : specs_)
        if (s.name == name) return s;
    fail("unknown option --", name, " (see spense ", command_, " --help)");
}

std::string Args::usage() const {
    std::string u = "usage: spense " + command_ + " [options]\n" + summary_ + "\n\noptions:\n";
    for (const auto& s : specs_) {
        std::string left = "  --" + s.name + (s.value_name.empty() ? "" : " " + s.value_name);
        if (left.size() < 26) left.resize(26, ' ');
        else left += "\n" + std::string(26, ' ');
        u += left + s.help + (s.default_value.empty() ? "" : " (default: " + s.default_value + ")") + "\n";
    }
    return u;
}

bool Args::flag(const std::string& name) const {
    spec(name);
    return values_.count(name) != 0;
}

std::optional<std::string> Args::get(const std::string& name) const {
    const OptionSpec& s = spec(name);
    if (auto it = values_.find(name); it != values_.end()) return it->second;
    if (!s.default_value.empty()) return s.default_value;
    return std::nullopt;
}

std::string Args::required(const std::string& name) const {
    auto v = get(name);
    if (!v) fail("--", name, " is required (see spense ", command_, " --help)");
    return *v;
}

int64_t Args::get_int(const std::string& name) const {
    std::string v = required(name);
    int64_t out = 0;
    auto res = std::from_chars(v.data(), v.data() + v.size(), out);
    if (res.ec != std::errc() || res.ptr != v.data() + v.size()) fail("--", name, " expects an integer, got '", v, "'");
    return out;
}

double Args::get_double(const std::string& name) const {
    std::string v = required(name);
    double out = 0;
    auto res = std::from_chars(v.data(), v.data() + v.size(), out);
    if (res.ec != std::errc() || res.ptr != v.data() + v.size()) fail("--", name, " expects a number, got '", v, "'");
    return out;
}

}  // namespace spense::cli
