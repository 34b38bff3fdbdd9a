// What both executables share around `main`: the command-line conventions (CLI11 set up
// the same way in both tools), logging setup, and the one place where fstore::Error
// becomes a single stderr line and a documented exit code.
//
//   CLI::App app{"...", "fstore"};
//   fstore::cli::apply_conventions(app);           // before adding options and subcommands
//   ... add options and subcommands ...
//   fstore::cli::set_help_footers(app, examples, exit_codes);
//   if (auto code = fstore::cli::parse(app, argc, argv, std::cout, std::cerr)) return *code;
//   return fstore::run_guarded([&] { fstore::configure_logging("fstore", level); ... });
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace fstore {

// This build's version (the CMake project version), e.g. "0.1.0".
const char* version();

// Configures spdlog's default logger: stderr, "<tool>: <level>: <message>" (so errors read
// "fstore-access: error: ..."). `level` is one of trace, debug, info, warn, error, off
// (UsageError otherwise).
void configure_logging(const std::string& tool, const std::string& level);

// Runs `body` (with SIGXFSZ ignored, so that a file-size limit fails a write instead of
// killing the process), mapping exceptions to exit codes: fstore::Error -> its exit_code(),
// std::bad_alloc and any other std::exception -> ExitCode::internal. Each is reported as
// one line on stderr. Returns body's result when it does not throw and std::cout took all
// it printed; a failed write to stdout (a full disk under `> file`) is an IoError.
// json_errors (the command's --json): a failure also prints one JSON document on stdout,
// {"error": {"exit_code": N, "message": "..."}}, so that a script reading stdout gets a
// document either way (unless stdout itself is what failed).
int run_guarded(const std::function<int()>& body, bool json_errors = false);

// One JSON document on one line (compact, for scripts); invalid UTF-8 in strings (file
// names) is replaced instead of failing, and json_number's markers print bare.
std::string json_line(const nlohmann::json& value);
std::string json_line(const nlohmann::ordered_json& value);

// A double as JSON. NaN and ±infinity, which JSON lacks (nlohmann prints null), become
// markers that json_line prints as NaN, Infinity and -Infinity: Python's json.dumps
// spelling, which json.loads reads back. (A marker is the string of a NUL byte and the
// word; json_line prints only such whole strings bare, and only as values, never keys.)
nlohmann::json json_number(double value);

namespace cli {

// Sets the conventions of both tools on `app`, which must be named after the tool. Call it
// before adding options and subcommands: subcommands copy these settings when created.
//   - "Usage:" lines show the tool's name, not the path the binary was run by;
//   - a single-value option or flag given twice takes the last value (shell wrappers append
//     overrides); options that take lists (--text, --idx, --splits) collect every value;
//   - --version prints "<tool> <version>";
//   - help lists what an option excludes inside its description, not in the name column.
void apply_conventions(CLI::App& app);

// The top-level help ends with every example and `exit_codes`; a subcommand's help with
// only the examples that run it (an example runs subcommand S when one of its words is S).
// Call once every subcommand is added.
void set_help_footers(CLI::App& app, const std::vector<std::string>& examples,
                      const std::string& exit_codes);

// Parses the command line. nullopt: go on and run the command. Otherwise exit at once with
// the returned code: 0 after --help or --version (printed on `out`), ExitCode::usage after
// one line on `err` (usage_error_line). An option's value that is one of the tool's own
// options ("--h5 --json") is a forgotten value and a usage error, unless it was attached
// with '=' ("--text=--json").
std::optional<int> parse(CLI::App& app, int argc, const char* const* argv, std::ostream& out,
                         std::ostream& err);

// The line a parse error prints: "<tool>: error: <what> (see <tool> <subcommand> --help)",
// naming the subcommand being parsed when the error struck. A word where a subcommand
// belongs reads "unknown subcommand 'x': use one of a, b, c".
std::string usage_error_line(const CLI::App& app, const CLI::Error& error);

// An integer in [min, max] written in decimal; anything else throws CLI::ValidationError
// "<name> must be between <min> and <max>" ("<name> must be <min> or more" when `max` is
// the type's largest value and the text is a smaller integer). Never prints a double.
std::int64_t parse_integer(const std::string& name, const std::string& text, std::int64_t min,
                           std::int64_t max);

// A check for options that name a file or folder: an empty value ("" from an unset shell
// variable) is refused instead of silently meaning the default.
CLI::Validator non_empty_path();

// A list option written as comma-separated names, repeatable and space-separated as other
// list options: `--splits train,val --splits test` and `--splits train val test` give
// {train, val, test}. Unlike CLI11's delimiter, empty parts are kept
// ("train,,val" gives an empty name) so that the command can refuse them instead of
// silently encoding fewer splits than were typed.
CLI::Option* add_comma_list(CLI::App& app, const std::string& names, std::vector<std::string>& values,
                            const std::string& description);

namespace detail {
// Adds option `names` (its first name is the one messages use); its text goes through
// parse_integer(min, max) while parsing and the value to `store`.
CLI::Option* add_integer_option(CLI::App& app, const std::string& names,
                                const std::string& description, std::int64_t min,
                                std::int64_t max, std::function<void(std::int64_t)> store);
}  // namespace detail

// An integer option (or positional) checked by parse_integer while parsing, so that a bad
// value is a usage error naming the option. The help shows the current value as default.
template <class T>
CLI::Option* add_integer(CLI::App& app, const std::string& names, T& value,
                         const std::string& description, T min,
                         T max = std::numeric_limits<T>::max()) {
    return detail::add_integer_option(app, names, description, min, max,
                                      [&value](std::int64_t v) { value = static_cast<T>(v); })
        ->default_function([&value] { return std::to_string(value); })
        ->capture_default_str();
}

// The same for an option whose absence means something (e.g. "no limit"): `value` stays
// nullopt unless the option is given.
template <class T>
CLI::Option* add_integer(CLI::App& app, const std::string& names, std::optional<T>& value,
                         const std::string& description, T min,
                         T max = std::numeric_limits<T>::max()) {
    return detail::add_integer_option(app, names, description, min, max,
                                      [&value](std::int64_t v) { value = static_cast<T>(v); });
}

}  // namespace cli
}  // namespace fstore
