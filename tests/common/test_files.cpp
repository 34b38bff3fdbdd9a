// remove_stale_temporaries: only `<name><infix>PID[-N]` files of processes that are gone.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fstore/files.hpp"

namespace fs = std::filesystem;

namespace {

// A PID that was just used and is gone (its child exited and was reaped).
pid_t dead_pid() {
    const pid_t child = ::fork();
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    return child;
}

void touch(const fs::path& path) { std::ofstream(path) << "x"; }

}  // namespace

TEST(Files, DirectoryOf) {
    EXPECT_EQ(fstore::directory_of("store.h5"), fs::path("."));
    EXPECT_EQ(fstore::directory_of("a/b/store.h5"), fs::path("a/b"));
    EXPECT_EQ(fstore::directory_of("/store.h5"), fs::path("/"));
}

TEST(Files, RemovesOnlyTemporariesOfDeadProcesses) {
    const fs::path dir = fs::temp_directory_path() / ("fstore_files_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path target = dir / "store.h5";
    const std::string gone = std::to_string(dead_pid());
    const std::string alive = std::to_string(::getppid());
    const std::string self = std::to_string(::getpid());
    const fs::path removed[] = {dir / ("store.h5.creating-" + gone), dir / ("store.h5.creating-" + gone + "-2")};
    const fs::path kept[] = {
        target,                                          // the target itself
        dir / ("store.h5.creating-" + alive),            // a live writer's
        dir / ("store.h5.creating-" + self),             // this process's
        dir / ("store.h5.partial-" + gone),              // another kind of temporary
        dir / ("other.h5.creating-" + gone),             // another target's
        dir / ("store.h5.creating-" + gone + ".bak"),    // not PID[-N]
        dir / ("store.h5.creating-" + gone + "-x"),
        dir / "store.h5.creating-",
    };
    for (const auto& p : removed) touch(p);
    for (const auto& p : kept) touch(p);
    fstore::remove_stale_temporaries(target, ".creating-");
    for (const auto& p : removed) EXPECT_FALSE(fs::exists(p)) << p;
    for (const auto& p : kept) EXPECT_TRUE(fs::exists(p)) << p;
    fstore::remove_stale_temporaries(dir / "missing-dir" / "x.h5", ".creating-");  // no throw
    fs::remove_all(dir);
}
