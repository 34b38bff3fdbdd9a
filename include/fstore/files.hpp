// Small file-system helpers the writers share: where a file's directory is, and cleaning up
// the temporary files (`<name>.partial-PID`, `<name>.creating-PID`) that a writer killed
// before its destructors ran leaves beside its target.
#pragma once

#include <filesystem>
#include <string>

namespace fstore {

// The directory holding `file`: its parent, or "." for a bare name.
std::filesystem::path directory_of(const std::filesystem::path& file);

// Removes the files beside `target` named `<target's name><infix><PID>` or
// `<target's name><infix><PID>-<N>` whose process PID no longer exists. A file of a live
// process, of this one, or of a PID reused since is left alone, as is anything else in the
// directory. Errors are ignored: the cleanup is a courtesy, never a reason to fail.
void remove_stale_temporaries(const std::filesystem::path& target, const std::string& infix);

}  // namespace fstore
