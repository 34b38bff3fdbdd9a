// Shared helpers of the text tests: temp dirs, files, running the Python reference driver.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace fstore::test {

inline std::filesystem::path make_temp_dir(const std::string& tag) {
    auto dir = std::filesystem::temp_directory_path() /
               ("fstore_text_" + tag + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

inline std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_file(const std::filesystem::path& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary);
    out << content;
}

// Runs tests/text/tokenizer_ref_driver.py MODE OUTDIR and returns OUTDIR/cases.json.
inline nlohmann::json run_reference_driver(const std::string& mode, const std::filesystem::path& outdir) {
    const std::string command = std::string("\"") + FSTORE_PYTHON + "\" \"" + FSTORE_SOURCE_DIR +
                                "/tests/text/tokenizer_ref_driver.py\" " + mode + " \"" + outdir.string() + "\"";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("reference driver failed: " + command);
    return nlohmann::json::parse(read_file(outdir / "cases.json"));
}

}  // namespace fstore::test
