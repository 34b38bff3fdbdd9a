// The command-line conventions both tools share (fstore/cli.hpp), on a small app shaped like
// theirs: a global option, subcommands, flags, integer options, an exclusion.
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fstore/cli.hpp"
#include "fstore/error.hpp"

using ::testing::HasSubstr;
using ::testing::Not;

namespace {

struct Tool {
    CLI::App app{"tool: a test tool", "tool"};
    std::string level = "warn";
    int size = 224;
    int batch = 64;
    std::optional<std::int64_t> limit;
    bool json = false, concept_only = false, label_only = false;
    std::vector<std::string> texts, splits;
    CLI::App* build = nullptr;
    CLI::App* fetch = nullptr;
    std::string out, err;

    Tool() {
        fstore::cli::apply_conventions(app);
        app.require_subcommand(1);
        app.add_option("--log-level", level, "log level");
        build = app.add_subcommand("build", "Build");
        build->fallthrough();
        fstore::cli::add_integer(*build, "--size,--image-size", size, "image size", 28, 224);
        fstore::cli::add_integer(*build, "--batch-size", batch, "images per batch", 1);
        fstore::cli::add_integer(*build, "--limit", limit, "first N", std::int64_t{0});
        build->add_flag("--json", json, "JSON");
        build->add_option("--text", texts, "a text (repeatable)");
        fstore::cli::add_comma_list(*build, "--splits", splits, "splits");
        fetch = app.add_subcommand("fetch", "Fetch");
        auto* concept_flag = fetch->add_flag("--concept", concept_only, "Only concept templates");
        fetch->add_flag("--label", label_only, "Only label templates")->excludes(concept_flag);
        fstore::cli::set_help_footers(app, {"tool build --size 28", "tool fetch --concept"}, "Exit codes: 0 ok");
    }

    // nullopt: parsed, run the command; otherwise the exit code parse() returned.
    std::optional<int> parse(std::vector<std::string> args) {
        args.insert(args.begin(), "/some/where/bin/tool");
        std::vector<const char*> argv;
        for (const auto& a : args) argv.push_back(a.c_str());
        std::ostringstream out_stream, err_stream;
        const auto code = fstore::cli::parse(app, static_cast<int>(argv.size()), argv.data(), out_stream, err_stream);
        out = out_stream.str();
        err = err_stream.str();
        return code;
    }

    // The one stderr line of a usage error (exit 2), without its newline.
    std::string usage_error(const std::vector<std::string>& args) {
        const auto code = parse(args);
        EXPECT_EQ(code, static_cast<int>(fstore::ExitCode::usage));
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
        EXPECT_EQ(out, "");
        return err.substr(0, err.find('\n'));
    }
};

TEST(CliConventions, UsageErrorIsOneLineNamingTheSubcommandsHelp) {
    Tool tool;
    EXPECT_EQ(tool.usage_error({"build", "--bogus"}),
              "tool: error: the following argument was not expected: --bogus (see tool build --help)");
    EXPECT_EQ(tool.usage_error({"build", "--a", "--b"}),
              "tool: error: the following arguments were not expected: --a --b (see tool build --help)");
}

TEST(CliConventions, SubcommandOptionBeforeItsSubcommandSaysWhereItGoes) {
    EXPECT_EQ(Tool().usage_error({"--json", "build"}),
              "tool: error: --json is an option of 'build', not of tool: put it after 'build' "
              "(see tool build --help)");
    EXPECT_EQ(Tool().usage_error({"--json", "--size=28", "build"}),
              "tool: error: --json, --size are options of 'build', not of tool: put them after 'build' "
              "(see tool build --help)");
    // A negative value after the option is its value, not another option.
    EXPECT_EQ(Tool().usage_error({"--limit", "-1", "build"}),
              "tool: error: --limit is an option of 'build', not of tool: put it after 'build' "
              "(see tool build --help)");
    // Not an option of the subcommand either: the plain message.
    EXPECT_EQ(Tool().usage_error({"--bogus", "build"}),
              "tool: error: the following argument was not expected: --bogus (see tool build --help)");
}

TEST(CliConventions, UnknownOrMissingSubcommandListsTheSubcommands) {
    EXPECT_EQ(Tool().usage_error({"bogus"}),
              "tool: error: unknown subcommand 'bogus': use one of build, fetch (see tool --help)");
    EXPECT_EQ(Tool().usage_error({}),
              "tool: error: a subcommand is required: use one of build, fetch (see tool --help)");
    EXPECT_EQ(Tool().usage_error({"--bogus"}),
              "tool: error: the following argument was not expected: --bogus (see tool --help)");
}

TEST(CliConventions, AnOptionWhereAValueBelongsIsAForgottenValueUnlessAttached) {
    Tool tool;
    EXPECT_EQ(tool.usage_error({"build", "--text", "--json"}),
              "tool: error: --text needs values (got option '--json') (see tool build --help)");
    EXPECT_EQ(tool.usage_error({"build", "--text=--json", "--text", "--json"}),
              "tool: error: --text needs values (got option '--json') (see tool build --help)");
    ASSERT_EQ(tool.parse({"build", "--text=--json", "--text=--size"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.texts, (std::vector<std::string>{"--json", "--size"}));
    EXPECT_FALSE(tool.json);
    // "--text=" is an empty value, as "--text ''" is: it does not take the next word.
    Tool empty;
    ASSERT_EQ(empty.parse({"build", "--text=", "--text=abc", "--json"}), std::nullopt) << empty.err;
    EXPECT_EQ(empty.texts, (std::vector<std::string>{"", "abc"}));
    EXPECT_TRUE(empty.json);
}

TEST(CliConventions, ExcludedFlagsContradictEachOther) {
    EXPECT_EQ(Tool().usage_error({"fetch", "--concept", "--label"}),
              "tool: error: --concept and --label contradict each other: pass only one of them "
              "(see tool fetch --help)");
}

TEST(CliConventions, LastValueWinsForOptionsAndFlags) {
    Tool tool;
    EXPECT_EQ(tool.parse({"build", "--size", "28", "--json", "--size", "64", "--json", "--log-level", "info",
                          "--log-level", "debug", "--limit", "-5", "--limit", "3"}),
              std::nullopt)
        << tool.err;
    EXPECT_EQ(tool.size, 64);
    EXPECT_TRUE(tool.json);
    EXPECT_EQ(tool.level, "debug");
    EXPECT_EQ(tool.limit, 3);
}

TEST(CliConventions, ListOptionsCollectEveryValue) {
    Tool tool;
    ASSERT_EQ(tool.parse({"build", "--text", "a", "--text", "b"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.texts, (std::vector<std::string>{"a", "b"}));
}

TEST(CliConventions, CommaListsKeepEmptyNamesForTheCommandToRefuse) {
    Tool tool;
    ASSERT_EQ(tool.parse({"build", "--splits", "train,val", "--splits", "test"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.splits, (std::vector<std::string>{"train", "val", "test"}));
    ASSERT_EQ(tool.parse({"build", "--splits", "train,,val,"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.splits, (std::vector<std::string>{"train", "", "val", ""}));
    ASSERT_EQ(tool.parse({"build", "--splits", ""}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.splits, (std::vector<std::string>{""}));
    // Trimmed as CSV split names are; blanks alone are an empty name.
    ASSERT_EQ(tool.parse({"build", "--splits", " train, val ,\t, "}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.splits, (std::vector<std::string>{"train", "val", "", ""}));
    ASSERT_EQ(tool.parse({"build", "--splits", "train", "val,test", "--json"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.splits, (std::vector<std::string>{"train", "val", "test"}));
    EXPECT_TRUE(tool.json);
}

TEST(JsonLine, NonFiniteNumbersPrintAsPythonWritesThem) {
    const double inf = std::numeric_limits<double>::infinity();
    nlohmann::json j = {{"a", fstore::json_number(std::nan(""))}, {"b", fstore::json_number(inf)},
                        {"c", fstore::json_number(-inf)}, {"d", fstore::json_number(0.5)},
                        {"e", "NaN"}, {"f", std::string("\0x", 2)}};
    EXPECT_EQ(fstore::json_line(j), R"({"a":NaN,"b":Infinity,"c":-Infinity,"d":0.5,"e":"NaN","f":"\u0000x"})");
    nlohmann::ordered_json o = {{"z", fstore::json_number(std::nan(""))}, {"list", {fstore::json_number(-inf), 1}}};
    EXPECT_EQ(fstore::json_line(o), R"({"z":NaN,"list":[-Infinity,1]})");
    // A marker's characters in a key, or after other characters of a string, stay quoted.
    const std::string marker("\0NaN", 4);
    nlohmann::json odd = {{marker, 1}, {"k", "x\"" + marker}, {"l", {std::string("\\") + marker}}};
    EXPECT_EQ(fstore::json_line(odd), R"({"\u0000NaN":1,"k":"x\"\u0000NaN","l":["\\\u0000NaN"]})");
    EXPECT_EQ(nlohmann::json::parse(fstore::json_line(odd)), odd);
}

TEST(CliConventions, IntegerOptionsSayTheirRangeWithoutHugeNumbers) {
    EXPECT_EQ(Tool().usage_error({"build", "--batch-size", "99999999999"}),
              "tool: error: --batch-size must be between 1 and 2147483647, not 99999999999 (see tool build --help)");
    EXPECT_EQ(Tool().usage_error({"build", "--batch-size", "0"}),
              "tool: error: --batch-size must be 1 or more, not 0 (see tool build --help)");
    EXPECT_EQ(Tool().usage_error({"build", "--limit", "-1"}),
              "tool: error: --limit must be 0 or more, not -1 (see tool build --help)");
    EXPECT_EQ(Tool().usage_error({"build", "--size", "1e3"}),
              "tool: error: --size must be an integer, not '1e3' (see tool build --help)");
    EXPECT_EQ(Tool().usage_error({"build", "--image-size", "-99999999999999999999"}),
              "tool: error: --size must be between 28 and 224, not -99999999999999999999 (see tool build --help)");
}

TEST(CliConventions, AbsentOptionalIntegerStaysUnset) {
    Tool tool;
    ASSERT_EQ(tool.parse({"build", "--batch-size", "+8"}), std::nullopt) << tool.err;
    EXPECT_EQ(tool.limit, std::nullopt);
    EXPECT_EQ(tool.batch, 8);
}

TEST(CliConventions, ParseIntegerBounds) {
    using fstore::cli::parse_integer;
    constexpr auto lowest = std::numeric_limits<std::int64_t>::min();
    constexpr auto highest = std::numeric_limits<std::int64_t>::max();
    EXPECT_EQ(parse_integer("index", "-9223372036854775808", lowest, highest), lowest);
    EXPECT_EQ(parse_integer("index", "9223372036854775807", lowest, highest), highest);
    EXPECT_THROW(parse_integer("index", "9223372036854775808", lowest, highest), CLI::ValidationError);
    EXPECT_THROW(parse_integer("index", "", lowest, highest), CLI::ValidationError);
    EXPECT_THROW(parse_integer("index", "1.5", lowest, highest), CLI::ValidationError);
    EXPECT_THROW(parse_integer("index", "+", lowest, highest), CLI::ValidationError);
    EXPECT_THROW(parse_integer("index", "+-5", lowest, highest), CLI::ValidationError);
    EXPECT_EQ(parse_integer("index", "+5", lowest, highest), 5);
}

TEST(CliConventions, VersionAndHelpExitZeroOnStdout) {
    Tool tool;
    EXPECT_EQ(tool.parse({"--version"}), 0);
    EXPECT_EQ(tool.out, std::string("tool ") + fstore::version() + "\n");
    EXPECT_EQ(tool.err, "");

    Tool help;
    EXPECT_EQ(help.parse({"--help"}), 0);
    // The bare tool name, not the path it was run by.
    EXPECT_THAT(help.out, HasSubstr("Usage: tool [OPTIONS] SUBCOMMAND"));
    EXPECT_THAT(help.out, Not(HasSubstr("/some/where")));
    EXPECT_THAT(help.out, HasSubstr("Examples:\n  tool build --size 28\n  tool fetch --concept\n\nExit codes: 0 ok"));
}

TEST(CliConventions, SubcommandHelpShowsItsOwnExamplesAndReadableExclusions) {
    Tool tool;
    EXPECT_EQ(tool.parse({"fetch", "--help"}), 0);
    EXPECT_THAT(tool.out, HasSubstr("Usage: tool fetch [OPTIONS]"));
    EXPECT_THAT(tool.out, HasSubstr("Examples:\n  tool fetch --concept"));
    EXPECT_THAT(tool.out, Not(HasSubstr("tool build --size 28")));
    EXPECT_THAT(tool.out, Not(HasSubstr("Exit codes")));
    EXPECT_THAT(tool.out, Not(HasSubstr("Excludes:")));
    EXPECT_THAT(tool.out, HasSubstr("Only concept templates (not with --label)"));
}

}  // namespace

// Standard output that fails after the body: an I/O error (exit 10), except for an
// interrupted run, whose 130 says what happened to the store (the terminal closed, SIGHUP).
TEST(RunGuarded, InterruptedRunKeepsItsStatusWhenStdoutFails) {
    const auto with_failing_stdout = [](int code) {
        const int result = fstore::run_guarded([code] {
            std::cout.setstate(std::ios::badbit);
            return code;
        });
        std::cout.clear();
        return result;
    };
    EXPECT_EQ(with_failing_stdout(static_cast<int>(fstore::ExitCode::interrupted)),
              static_cast<int>(fstore::ExitCode::interrupted));
    EXPECT_EQ(with_failing_stdout(0), static_cast<int>(fstore::ExitCode::io));
}

// json_errors: the failure is a JSON document on stdout too; without it stdout stays empty.
TEST(RunGuarded, JsonErrorsPrintTheFailureOnStdout) {
    const auto stdout_of = [](bool json_errors, int* code) {
        std::ostringstream captured;
        auto* const saved = std::cout.rdbuf(captured.rdbuf());
        *code = fstore::run_guarded([]() -> int { throw fstore::NotFoundError("no such store"); }, json_errors);
        std::cout.rdbuf(saved);
        return captured.str();
    };
    int code = 0;
    EXPECT_EQ(stdout_of(true, &code), "{\"error\":{\"exit_code\":3,\"message\":\"no such store\"}}\n");
    EXPECT_EQ(code, 3);
    EXPECT_EQ(stdout_of(false, &code), "");
    EXPECT_EQ(code, 3);
}
