// Helpers shared by the image tests: scratch directories, Python helpers, raw files.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace fstore::test {

// A fresh directory under /tmp, removed with its contents at scope exit.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "fstore-image-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::string operator/(const std::string& name) const { return (path_ / name).string(); }

private:
    std::filesystem::path path_;
};

inline std::string source_path(const std::string& rel) { return std::string(FSTORE_SOURCE_DIR) + "/" + rel; }

// Runs a script of tests/ with Debian's python (tests/python on PYTHONPATH); fails the
// test on a non-zero exit.
inline void run_python(const std::string& script_and_args) {
    const std::string cmd = std::string("PYTHONPATH='") + FSTORE_SOURCE_DIR + "/tests/python' '" +
                            FSTORE_PYTHON + "' " + script_and_args;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}


inline std::vector<std::uint8_t> read_bytes(const std::string& path);

// Runs a case generator once per build tree: its output lands in
// FSTORE_BINARY_DIR/image-test-cases/<tag>-<hash of the scripts>, shared by the test
// processes ctest starts (one per test case). Written to a temporary sibling and renamed,
// so concurrent tests never see a half-written directory.
inline std::string cached_cases(const std::string& tag, const std::string& script_rel,
                                const std::vector<std::string>& also_hash = {}) {
    namespace fs = std::filesystem;
    std::string key;
    for (const auto& rel : also_hash) {
        const auto b = read_bytes(source_path(rel));
        key.append(b.begin(), b.end());
    }
    const auto b = read_bytes(source_path(script_rel));
    key.append(b.begin(), b.end());
    const fs::path root = fs::path(FSTORE_BINARY_DIR) / "image-test-cases";
    const fs::path final_dir = root / (tag + "-" + std::to_string(std::hash<std::string>()(key)));
    if (fs::exists(final_dir / "done")) return final_dir.string();
    fs::create_directories(root);
    std::string tmpl = (root / (tag + "-tmp-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    const std::string cmd = std::string("PYTHONPATH='") + FSTORE_SOURCE_DIR + "/tests/python' '" + FSTORE_PYTHON +
                            "' '" + source_path(script_rel) + "' '" + tmpl + "'";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
    std::ofstream(fs::path(tmpl) / "done") << "ok\n";
    std::error_code ec;
    fs::rename(tmpl, final_dir, ec);
    if (ec) fs::remove_all(tmpl, ec);  // another test process got there first
    return final_dir.string();
}

inline std::vector<std::uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_bytes(const std::string& path, const std::vector<std::uint8_t>& data) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

template <class T>
std::vector<T> read_raw(const std::string& path) {
    const auto bytes = read_bytes(path);
    std::vector<T> out(bytes.size() / sizeof(T));
    if (!out.empty()) {  // an empty vector's data() may be null, which memcpy must not get
        std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    }
    return out;
}

}  // namespace fstore::test
