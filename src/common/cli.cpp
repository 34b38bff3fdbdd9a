#include "fstore/cli.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <charconv>
#include <cmath>
#include <cstring>
#include <iostream>
#include <memory>
#include <new>
#include <ostream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "fstore/error.hpp"

namespace fstore {

const char* version() { return FSTORE_VERSION; }

void configure_logging(const std::string& tool, const std::string& level) {
    auto logger = spdlog::stderr_color_mt(tool);
    // On a terminal a progress bar may be on the current line (drawn with \r, no newline):
    // each log line first clears it, so a warning never runs into the bar.
    logger->set_pattern(::isatty(STDERR_FILENO) ? "\r\033[K%n: %^%l%$: %v" : "%n: %^%l%$: %v");
    spdlog::set_default_logger(logger);
    const auto parsed = spdlog::level::from_str(level);
    // from_str maps unknown names to "off"; only accept "off" when it was asked for.
    if (parsed == spdlog::level::off && level != "off") {
        throw UsageError("unknown --log-level '" + level + "': use trace, debug, info, warn, error or off");
    }
    spdlog::set_level(parsed);
}

namespace {
// The one line that says why a run failed is its result, not a log message: --log-level off
// (or critical) silences logs, never it.
void report_failure(const std::string& message) {
    const auto logger = spdlog::default_logger();
    if (!logger->should_log(spdlog::level::err)) logger->set_level(spdlog::level::err);
    logger->error("{}", message);
}
}  // namespace

namespace {
// A pipe whose reader is gone (`| head` with SIGPIPE ignored): poll reports POLLERR on it.
bool stdout_is_broken_pipe() {
    struct stat st {};
    if (::fstat(STDOUT_FILENO, &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
    pollfd out{STDOUT_FILENO, POLLOUT, 0};
    return ::poll(&out, 1, 0) == 1 && (out.revents & POLLERR) != 0;
}

// Thrown when stdout itself failed: no JSON error can go there.
struct StdoutFailed : IoError {
    using IoError::IoError;
};
}  // namespace

int run_guarded(const std::function<int()>& body, bool json_errors) {
    // A file-size limit (ulimit -f) would kill the tool with SIGXFSZ mid-write, silently;
    // ignored, the write fails with EFBIG and is reported as the I/O error it is.
    std::signal(SIGXFSZ, SIG_IGN);
    const char* const out_of_memory = "out of memory: ask for less at once (a smaller --batch-size or selection)";
    const auto fail = [&](const std::string& message, ExitCode code, bool stdout_usable = true) {
        report_failure(message);
        if (json_errors && stdout_usable) {
            const nlohmann::json error = {{"exit_code", static_cast<int>(code)}, {"message", message}};
            std::cout << json_line(nlohmann::json{{"error", error}}) << '\n';
            std::cout.flush();
        }
        return static_cast<int>(code);
    };
    try {
        const int code = body();
        // What was printed is the result too: `--json > file` on a full disk must not exit 0
        // with half a document in the file.
        errno = 0;
        std::cout.flush();
        // An interrupted run keeps its exit status when the summary cannot be printed (the
        // terminal closed: SIGHUP): 130 says what happened to the store; the line says the rest.
        if (!std::cout && code == static_cast<int>(ExitCode::interrupted)) {
            report_failure("cannot write to standard output: the summary of the interrupted run is incomplete");
            return code;
        }
        if (!std::cout) {
            const int error = errno;
            if (error == EPIPE || stdout_is_broken_pipe()) {
                throw StdoutFailed("cannot write to standard output: its reader closed the pipe (broken pipe): "
                                   "what was printed is incomplete; read all of it, or use --out FILE");
            }
            throw StdoutFailed(std::string("cannot write to standard output") +
                               (error != 0 ? std::string(" (") + std::strerror(error) + ")" : std::string()) +
                               ": what was printed is incomplete; free space or send the output elsewhere");
        }
        return code;
    } catch (const StdoutFailed& e) {
        return fail(e.what(), e.exit_code(), false);
    } catch (const Error& e) {
        return fail(e.what(), e.exit_code());
    } catch (const std::bad_alloc&) {
        return fail(out_of_memory, ExitCode::internal);
    } catch (const std::length_error&) {  // a vector asked for more than max_size()
        return fail(out_of_memory, ExitCode::internal);
    } catch (const std::exception& e) {
        return fail(std::string("internal error: ") + e.what() + " (please report this)", ExitCode::internal);
    }
}

namespace {
const std::string nan_marker("\0NaN", 4), infinity_marker("\0Infinity", 9), minus_infinity_marker("\0-Infinity", 10);

// The markers as nlohmann writes them ("\u0000NaN" in quotes) become bare words. Only whole
// string tokens in value position: a key, or a string that merely contains the characters
// (an escaped quote before them), stays as it is.
std::string unmark_non_finite(const std::string& text) {
    const std::string escaped_nul = "\\u0000";
    if (text.find(escaped_nul) == std::string::npos) return text;
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        if (text[i] != '"') {
            out += text[i++];
            continue;
        }
        std::size_t end = i + 1;  // the closing quote
        while (end < text.size() && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
        const std::string body = text.substr(i + 1, end - i - 1);
        const bool key = end + 1 < text.size() && text[end + 1] == ':';
        const std::string word = body.compare(0, escaped_nul.size(), escaped_nul) == 0 ? body.substr(escaped_nul.size()) : "";
        if (!key && (word == "NaN" || word == "Infinity" || word == "-Infinity")) {
            out += word;
        } else {
            out.append(text, i, end + 1 - i);
        }
        i = end + 1;
    }
    return out;
}
}  // namespace

std::string json_line(const nlohmann::json& value) {
    return unmark_non_finite(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string json_line(const nlohmann::ordered_json& value) {
    return unmark_non_finite(value.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

nlohmann::json json_number(double value) {
    if (std::isfinite(value)) return value;
    return std::isnan(value) ? nan_marker : value > 0 ? infinity_marker : minus_infinity_marker;
}

namespace cli {
namespace {

// CLI11's help puts "Excludes: --label" after the option's name, where it runs into the
// description ("--concept Excludes: --label Only templates..."); this one says it at the end
// of the description instead: "Only templates ... (not with --label)".
class HelpFormatter : public CLI::Formatter {
public:
    std::string make_option_opts(const CLI::Option* option) const override {
        std::string opts = CLI::Formatter::make_option_opts(option);
        // CLI11 appends " Needs: ..." and then " Excludes: ...": cut from the first of them.
        const auto cut = std::min(opts.find(" " + get_label("Needs") + ":"),
                                  opts.find(" " + get_label("Excludes") + ":"));
        return opts.substr(0, cut);
    }

    std::string make_option_desc(const CLI::Option* option) const override {
        std::string description = CLI::Formatter::make_option_desc(option);
        description += names_in(" (needs ", option->get_needs());
        description += names_in(" (not with ", option->get_excludes());
        return description;
    }

private:
    static std::string names_in(const std::string& lead, const std::set<CLI::Option*>& options) {
        if (options.empty()) return "";
        std::string names;
        for (const CLI::Option* option : options) names += (names.empty() ? "" : ", ") + option->get_name();
        return lead + names + ")";
    }
};

bool is_word_of(const std::string& line, const std::string& word) {
    std::istringstream words(line);
    for (std::string w; words >> w;)
        if (w == word) return true;
    return false;
}

std::string examples_block(const std::vector<std::string>& examples) {
    if (examples.empty()) return "";
    std::string block = "Examples:";
    for (const auto& example : examples) block += "\n  " + example;
    return block;
}

std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
    return app.get_subcommands([](const CLI::App*) { return true; });
}

std::string subcommand_names(const CLI::App& app) {
    std::string names;
    for (const CLI::App* sub : subcommands_of(app)) names += (names.empty() ? "" : ", ") + sub->get_name();
    return names;
}

// "The following argument was not expected: --x", with the arguments in command-line order
// (CLI11's own message lists them backwards).
std::string unexpected(const std::vector<std::string>& arguments) {
    std::string list;
    for (const auto& argument : arguments) list += (list.empty() ? "" : " ") + argument;
    return (arguments.size() == 1 ? "the following argument was not expected: "
                                   : "the following arguments were not expected: ") +
           list;
}

// What a parse error says, in fstore's words where CLI11's are unclear.
std::string what_went_wrong(const CLI::App& app, const CLI::App& selected, const CLI::Error& error) {
    std::string what = error.what();
    if (dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr && !app.remaining(true).empty()) {
        // An option of the subcommand typed before it (`tool --json sub`): it would have been
        // taken had it come after, so say where it goes.
        std::vector<std::string> misplaced;
        bool all_misplaced = &selected != &app;
        for (const auto& argument : app.remaining(true)) {
            // Values (`--limit -1`: "-1" is the option's value, not an option) are skipped.
            if (argument.size() < 2 || argument[0] != '-' || std::isdigit(static_cast<unsigned char>(argument[1])))
                continue;
            const std::string name = argument.substr(0, argument.find('='));
            if (selected.get_option_no_throw(name) == nullptr) all_misplaced = false;
            misplaced.push_back(name);
        }
        if (all_misplaced && !misplaced.empty()) {
            std::string names;
            for (const auto& name : misplaced) names += (names.empty() ? "" : ", ") + name;
            return names + (misplaced.size() == 1 ? " is an option" : " are options") + " of '" +
                   selected.get_name() + "', not of " + app.get_name() + ": put " +
                   (misplaced.size() == 1 ? "it" : "them") + " after '" + selected.get_name() + "'";
        }
        return unexpected(app.remaining(true));
    }
    if (dynamic_cast<const CLI::ExcludesError*>(&error) != nullptr) {
        // CLI11: "--run-text excludes --skip-text".
        const std::string separator = " excludes ";
        const auto at = what.find(separator);
        if (at != std::string::npos)
            return what.substr(0, at) + " and " + what.substr(at + separator.size()) +
                   " contradict each other: pass only one of them";
    }
    if (&selected == &app && !subcommands_of(app).empty()) {
        // No subcommand was recognised: CLI11 says "A subcommand is required" even when
        // the user typed one, misspelled.
        const auto extras = app.remaining();
        const auto word = std::find_if(extras.begin(), extras.end(),
                                       [](const std::string& arg) { return arg.empty() || arg[0] != '-'; });
        if (word != extras.end())
            return "unknown subcommand '" + *word + "': use one of " + subcommand_names(app);
        if (!extras.empty()) return unexpected(extras);
        if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr)
            return "a subcommand is required: use one of " + subcommand_names(app);
    }
    // CLI11 starts its sentences with a capital ("The following argument was not expected");
    // after "error: " it reads better in lower case. Names ("ID", "--x") stay as they are.
    if (what.size() > 1 && std::isupper(static_cast<unsigned char>(what[0])) &&
        std::islower(static_cast<unsigned char>(what[1])))
        what[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(what[0])));
    return what;
}

}  // namespace

void apply_conventions(CLI::App& app) {
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    app.formatter(std::make_shared<HelpFormatter>());
    app.set_version_flag("--version", app.get_name() + " " + version(), "Print the version and exit");
}

void set_help_footers(CLI::App& app, const std::vector<std::string>& examples,
                      const std::string& exit_codes) {
    app.footer(examples_block(examples) + "\n\n" + exit_codes);
    for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
        std::vector<std::string> own;
        std::copy_if(examples.begin(), examples.end(), std::back_inserter(own),
                     [&](const std::string& example) { return is_word_of(example, sub->get_name()); });
        sub->footer(examples_block(own));
    }
}

namespace {

// Whether `word` (up to any '=') names an option of `app` or of any of its subcommands.
bool names_an_option(const CLI::App& app, const std::string& word) {
    if (word.size() < 2 || word[0] != '-') return false;
    const std::string name = word.substr(0, word.find('='));
    if (app.get_option_no_throw(name) != nullptr) return true;
    const auto subcommands = const_cast<CLI::App&>(app).get_subcommands([](CLI::App*) { return true; });
    return std::any_of(subcommands.begin(), subcommands.end(),
                       [&](const CLI::App* sub) { return names_an_option(*sub, name); });
}

// "--h5 --json": CLI11 hands an option that takes a value the next word, even when that word
// is one of the tool's own options. Such a value is a forgotten one, never a file named
// "--json"; refused with the option's name instead of being used. One attached with '='
// ("--text=--json") was meant: `attached` holds those values, each as often as given.
void refuse_options_taken_as_values(const CLI::App& root, const CLI::App& app, std::multiset<std::string>& attached) {
    for (const CLI::Option* option : app.get_options()) {
        if (option->get_type_size() == 0 || option->count() == 0) continue;  // flags, unused
        for (const std::string& value : option->results()) {
            if (const auto meant = attached.find(value); meant != attached.end()) {
                attached.erase(meant);
                continue;
            }
            if (names_an_option(root, value)) {
                const bool several = option->get_expected_max() > 1;
                throw CLI::ValidationError(option->get_name() + " needs " + (several ? "values" : "a value") +
                                           " (got option '" + value + "')");
            }
        }
    }
    for (const CLI::App* sub : app.get_subcommands()) refuse_options_taken_as_values(root, *sub, attached);
}

}  // namespace

std::optional<int> parse(CLI::App& app, int argc, const char* const* argv, std::ostream& out,
                         std::ostream& err) {
    // Options given as "--name=value", before any "--": an empty value is split off as a word
    // of its own ("--text=" is "--text ''"; CLI11 would take the next word instead), and a
    // value that starts with '-' is kept in `attached` (meant, not forgotten).
    std::vector<std::string> words{argc > 0 ? argv[0] : ""};
    std::multiset<std::string> attached;
    bool positional = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view word = argv[i];
        positional = positional || word == "--";
        const auto equals = word.find('=');
        if (positional || word.rfind("--", 0) != 0 || equals == std::string_view::npos || equals < 3) {
            words.emplace_back(word);
        } else if (equals + 1 == word.size()) {
            words.emplace_back(word.substr(0, equals));
            words.emplace_back();
        } else {
            if (word[equals + 1] == '-') attached.emplace(word.substr(equals + 1));
            words.emplace_back(word);
        }
    }
    std::vector<const char*> split_argv;
    for (const auto& word : words) split_argv.push_back(word.c_str());
    argc = static_cast<int>(split_argv.size());
    argv = split_argv.data();
    try {
        app.parse(argc, argv);
        refuse_options_taken_as_values(app, app, attached);
        return std::nullopt;
    } catch (const CLI::Success& e) {  // --help, --version
        return app.exit(e, out, err);
    } catch (const CLI::ParseError& e) {
        err << usage_error_line(app, e) << '\n';
        return static_cast<int>(ExitCode::usage);
    }
}

std::string usage_error_line(const CLI::App& app, const CLI::Error& error) {
    // The subcommand being parsed when the error struck: its help is the one to read.
    const CLI::App* selected = &app;
    std::string command = app.get_name();
    for (auto parsed = app.get_subcommands(); !parsed.empty(); parsed = selected->get_subcommands()) {
        selected = parsed.front();
        command += " " + selected->get_name();
    }
    return app.get_name() + ": error: " + what_went_wrong(app, *selected, error) + " (see " + command +
           " --help)";
}

std::int64_t parse_integer(const std::string& name, const std::string& text, std::int64_t min,
                           std::int64_t max) {
    const char* first = text.data();
    const char* last = first + text.size();
    // from_chars takes no '+'; a sign after it ("+-5") stays and is refused below.
    if (first != last && *first == '+' && (first + 1 == last || first[1] != '-')) ++first;
    std::int64_t value = 0;
    const auto [end, status] = std::from_chars(first, last, value);
    const bool integer = end == last && first != last && status != std::errc::invalid_argument;
    if (!integer) throw CLI::ValidationError(name + " must be an integer, not '" + text + "'");
    const bool too_large = status == std::errc::result_out_of_range ? text[0] != '-' : value > max;
    const bool too_small = status == std::errc::result_out_of_range ? text[0] == '-' : value < min;
    if (!too_large && !too_small) return value;
    // Options without an upper bound of their own (max is the type's) say only the lower one.
    const bool open_ended = max == std::numeric_limits<std::int64_t>::max() ||
                            max == std::numeric_limits<int>::max();
    const std::string range = open_ended && too_small
                                  ? std::to_string(min) + " or more"
                                  : "between " + std::to_string(min) + " and " + std::to_string(max);
    throw CLI::ValidationError(name + " must be " + range + ", not " + text);
}

CLI::Validator non_empty_path() {
    return CLI::Validator(
        [](std::string& value) {
            return value.empty() ? std::string("needs a path, got an empty value (an unset shell variable?)")
                                 : std::string();
        },
        "", "non-empty path");  // no description: the help keeps the option's own type name
}

CLI::Option* add_comma_list(CLI::App& app, const std::string& names, std::vector<std::string>& values,
                            const std::string& description) {
    CLI::callback_t split_and_store = [&values](const CLI::results_t& results) {
        values.clear();
        for (const auto& result : results) {
            for (std::size_t begin = 0;;) {
                const auto comma = result.find(',', begin);
                // Trimmed as CSV split names are: "train, val" names "val".
                std::string name = result.substr(begin, comma - begin);
                const auto first = name.find_first_not_of(" \t");
                name = first == std::string::npos ? std::string() : name.substr(first, name.find_last_not_of(" \t") + 1 - first);
                values.push_back(std::move(name));
                if (comma == std::string::npos) break;
                begin = comma + 1;
            }
        }
        return true;
    };
    return app.add_option(names, split_and_store, description)
        ->type_name("NAME[,NAME...]")
        ->expected(1, CLI::detail::expected_max_vector_size)  // `--splits train val` too
        ->allow_extra_args(true)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

namespace detail {

CLI::Option* add_integer_option(CLI::App& app, const std::string& names,
                                const std::string& description, std::int64_t min,
                                std::int64_t max, std::function<void(std::int64_t)> store) {
    const std::string name = names.substr(0, names.find(','));
    CLI::callback_t parse_and_store = [name, min, max, store = std::move(store)](const CLI::results_t& results) {
        // The multi-option policy left the value that counts last (--x 1 --x 2 means 2).
        store(parse_integer(name, results.back(), min, max));
        return true;
    };
    return app.add_option(names, parse_and_store, description)->type_name("INT");
}

}  // namespace detail
}  // namespace cli
}  // namespace fstore
