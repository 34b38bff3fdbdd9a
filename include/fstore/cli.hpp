// What both executables share around `main`: logging setup and the one place where
// fstore::Error becomes a single stderr line and a documented exit code.
#pragma once

#include <functional>
#include <string>

namespace fstore {

// Configures spdlog's default logger: stderr, "fstore: <message>" for errors and
// warnings. `level` is one of trace, debug, info, warn, error, off (UsageError otherwise).
void configure_logging(const std::string& level);

// Runs `body`, mapping exceptions to exit codes: fstore::Error -> its exit_code(),
// std::bad_alloc and any other std::exception -> ExitCode::internal. Each is reported as
// one line on stderr. Returns body's result when it does not throw.
int run_guarded(const std::function<int()>& body);

}  // namespace fstore
