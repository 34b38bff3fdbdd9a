// Metadata-only HDF5 access for the queries that look at a file's structure (summarize's
// tree drawing, verify's shape checks). It never reads dataset contents, so it needs no LZF
// filter and works on stores too broken for FeatureStore to open. Private to src/access.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <hdf5.h>

#include "fstore/query.hpp"

namespace fstore::detail {

// Owns one HDF5 identifier and closes it with the matching H5?close.
class H5Handle {
public:
    using Closer = herr_t (*)(hid_t);
    H5Handle() = default;
    H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
    H5Handle(const H5Handle&) = delete;
    H5Handle& operator=(const H5Handle&) = delete;
    H5Handle(H5Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
    H5Handle& operator=(H5Handle&& other) noexcept {
        if (this != &other) {
            reset();
            id_ = other.id_;
            closer_ = other.closer_;
            other.id_ = -1;
        }
        return *this;
    }
    ~H5Handle() { reset(); }

    hid_t get() const { return id_; }
    explicit operator bool() const { return id_ >= 0; }
    void reset() {
        if (id_ >= 0 && closer_ != nullptr) closer_(id_);
        id_ = -1;
    }

private:
    hid_t id_ = -1;
    Closer closer_ = nullptr;
};

struct RawDataset {
    std::vector<std::int64_t> dims;
    std::string dtype;  // numpy-like name, see TreeNode::dtype
};

// A file opened read-only with the default driver.
class RawFile {
public:
    // Opens `path`; nullopt when it is not an HDF5 file (or cannot be opened as one).
    static std::optional<RawFile> open(const std::filesystem::path& path);

    // Whether every component of the absolute `object` path exists.
    bool exists(const std::string& object) const;
    bool is_group(const std::string& object) const;
    std::optional<RawDataset> dataset(const std::string& object) const;
    // An integer attribute converted to int64; nullopt when absent or not an integer.
    std::optional<std::int64_t> int_attribute(const std::string& object, const std::string& name) const;
    // Link names in a group, in name order.
    std::vector<std::string> members(const std::string& group) const;
    TreeNode tree() const;

private:
    explicit RawFile(H5Handle file) : file_(std::move(file)) {}
    H5Handle file_;
};

// Silences HDF5's automatic error-stack printing for this thread (idempotent).
void silence_hdf5_errors();

}  // namespace fstore::detail
