#include "fstore/cli.hpp"

#include <new>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "fstore/error.hpp"

namespace fstore {

void configure_logging(const std::string& level) {
    auto logger = spdlog::stderr_color_mt("fstore");
    logger->set_pattern("%n: %^%l%$: %v");
    spdlog::set_default_logger(logger);
    const auto parsed = spdlog::level::from_str(level);
    // from_str maps unknown names to "off"; only accept "off" when it was asked for.
    if (parsed == spdlog::level::off && level != "off") {
        throw UsageError("unknown --log-level '" + level + "': use trace, debug, info, warn, error or off");
    }
    spdlog::set_level(parsed);
}

int run_guarded(const std::function<int()>& body) {
    try {
        return body();
    } catch (const Error& e) {
        spdlog::error("{}", e.what());
        return static_cast<int>(e.exit_code());
    } catch (const std::bad_alloc&) {
        spdlog::error("out of memory: try a smaller --batch-size");
        return static_cast<int>(ExitCode::internal);
    } catch (const std::exception& e) {
        spdlog::error("internal error: {} (please report this)", e.what());
        return static_cast<int>(ExitCode::internal);
    }
}

}  // namespace fstore
