#include <algorithm>
#include <map>
#include <utility>

#include "fstore/error.hpp"
#include "fstore/h5.hpp"
#include "h5_raw.hpp"

namespace fstore::detail {
namespace {

std::string type_name(hid_t type) {
    switch (H5Tget_class(type)) {
        case H5T_FLOAT:
            // Any 2-byte float passes for "float16" by its size: name the others by layout.
            if (H5Tget_size(type) == 2 && !h5::is_half(type)) {
                std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
                H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize);
                return esize == 8 && msize == 7 ? "bfloat16" : "float16 (non-IEEE layout)";
            }
            return "float" + std::to_string(8 * H5Tget_size(type));
        case H5T_INTEGER:
            return std::string(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") +
                   std::to_string(8 * H5Tget_size(type));
        case H5T_STRING:
            return H5Tis_variable_str(type) > 0 ? "str" : "S" + std::to_string(H5Tget_size(type));
        case H5T_COMPOUND: return "compound";
        case H5T_ENUM: return "enum";
        case H5T_ARRAY: return "array";
        case H5T_VLEN: return "vlen";
        case H5T_OPAQUE: return "opaque";
        case H5T_REFERENCE: return "reference";
        default: return "other";
    }
}

herr_t collect_link(hid_t, const char* name, const H5L_info_t*, void* data) {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
}

herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* data) {
    static_cast<std::vector<std::string>*>(data)->emplace_back(name);
    return 0;
}

std::vector<std::string> link_names(hid_t group) {
    std::vector<std::string> names;
    hsize_t index = 0;
    H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, collect_link, &names);
    return names;
}

std::vector<std::string> attribute_names(hid_t object) {
    std::vector<std::string> names;
    hsize_t index = 0;
    H5Aiterate2(object, H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute, &names);
    std::sort(names.begin(), names.end());
    return names;
}

RawDataset describe_dataset(hid_t dataset) {
    RawDataset out;
    H5Handle space(H5Dget_space(dataset), H5Sclose);
    H5Handle type(H5Dget_type(dataset), H5Tclose);
    if (space) {
        const int rank = H5Sget_simple_extent_ndims(space.get());
        if (rank > 0) {
            std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
            H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
            for (const auto d : dims) out.dims.push_back(static_cast<std::int64_t>(d));
        }
    }
    out.dtype = type ? type_name(type.get()) : "unknown";
    return out;
}

// Groups already drawn, by object address, with the path they were drawn at.
using SeenGroups = std::map<haddr_t, std::string>;

TreeNode describe_object(hid_t parent, const std::string& name, const std::string& path, SeenGroups& seen) {
    TreeNode node;
    node.name = name;
    // Soft and external links are drawn as what they say, not followed: h5py's visit
    // skips them too, and an external one would lead into another file.
    H5L_info_t link{};
    if (H5Lget_info(parent, name.c_str(), &link, H5P_DEFAULT) >= 0 && link.type != H5L_TYPE_HARD) {
        node.kind = TreeNode::Kind::link;
        std::vector<char> value(link.u.val_size + 1, '\0');
        const bool read = H5Lget_val(parent, name.c_str(), value.data(), link.u.val_size, H5P_DEFAULT) >= 0;
        const char* file = nullptr;
        const char* target = nullptr;
        if (!read) {
            node.link = "unreadable link";
        } else if (link.type == H5L_TYPE_SOFT) {
            node.link = "soft link to " + std::string(value.data());
            if (H5Oexists_by_name(parent, name.c_str(), H5P_DEFAULT) <= 0) node.link += " (dangling)";
        } else if (link.type == H5L_TYPE_EXTERNAL &&
                   H5Lunpack_elink_val(value.data(), link.u.val_size, nullptr, &file, &target) >= 0) {
            node.link = "external link to " + std::string(file) + ":" + target;
        } else {
            node.link = "user-defined link";
        }
        return node;
    }
    H5Handle object(H5Oopen(parent, name.c_str(), H5P_DEFAULT), H5Oclose);
    if (!object) {
        node.kind = TreeNode::Kind::link;
        node.link = "unreadable object";
        return node;
    }
    node.attributes = attribute_names(object.get());
    const H5I_type_t kind = H5Iget_type(object.get());
    if (kind == H5I_DATASET) {
        node.kind = TreeNode::Kind::dataset;
        auto info = describe_dataset(object.get());
        node.shape = std::move(info.dims);
        node.dtype = std::move(info.dtype);
    } else if (kind == H5I_GROUP) {
        // Each group once, as h5py's visit does: hard links may make cycles.
        H5O_info_t info;
        if (H5Oget_info2(object.get(), &info, H5O_INFO_BASIC) >= 0) {
            const auto [it, first] = seen.emplace(info.addr, path);
            if (!first) {
                node.same_as = it->second;
                return node;
            }
        }
        for (const auto& child : link_names(object.get())) {
            node.children.push_back(
                describe_object(object.get(), child, (path == "/" ? "/" : path + "/") + child, seen));
        }
    } else {
        node.kind = TreeNode::Kind::datatype;
    }
    return node;
}

}  // namespace

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::optional<RawFile> RawFile::open(const std::filesystem::path& path) {
    silence_hdf5_errors();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) return std::nullopt;  // a FIFO would block
    if (H5Fis_hdf5(path.c_str()) <= 0) return std::nullopt;
    H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!file) return std::nullopt;
    return RawFile(std::move(file));
}

bool RawFile::exists(const std::string& object) const {
    // H5Lexists needs each intermediate component to exist: check them in turn.
    std::string prefix;
    std::size_t start = 1;
    while (start <= object.size()) {
        const auto slash = object.find('/', start);
        prefix = object.substr(0, slash == std::string::npos ? object.size() : slash);
        if (H5Lexists(file_.get(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
        if (slash == std::string::npos) break;
        start = slash + 1;
    }
    return H5Oexists_by_name(file_.get(), object.c_str(), H5P_DEFAULT) > 0;
}

bool RawFile::is_group(const std::string& object) const {
    if (!exists(object)) return false;
    H5Handle handle(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), H5Oclose);
    return handle && H5Iget_type(handle.get()) == H5I_GROUP;
}

std::optional<RawDataset> RawFile::dataset(const std::string& object) const {
    if (!exists(object)) return std::nullopt;
    H5Handle handle(H5Oopen(file_.get(), object.c_str(), H5P_DEFAULT), H5Oclose);
    if (!handle || H5Iget_type(handle.get()) != H5I_DATASET) return std::nullopt;
    return describe_dataset(handle.get());
}

std::optional<std::int64_t> RawFile::int_attribute(const std::string& object, const std::string& name) const {
    if (!exists(object)) return std::nullopt;
    if (H5Aexists_by_name(file_.get(), object.c_str(), name.c_str(), H5P_DEFAULT) <= 0) return std::nullopt;
    H5Handle attr(H5Aopen_by_name(file_.get(), object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attr) return std::nullopt;
    H5Handle type(H5Aget_type(attr.get()), H5Tclose);
    H5Handle space(H5Aget_space(attr.get()), H5Sclose);
    if (!type || H5Tget_class(type.get()) != H5T_INTEGER || H5Sget_simple_extent_npoints(space.get()) != 1) {
        return std::nullopt;
    }
    std::int64_t value = 0;
    if (H5Aread(attr.get(), H5T_NATIVE_INT64, &value) < 0) return std::nullopt;
    return value;
}

std::vector<std::string> RawFile::members(const std::string& group) const {
    if (!is_group(group)) return {};
    H5Handle handle(H5Gopen2(file_.get(), group.c_str(), H5P_DEFAULT), H5Gclose);
    return handle ? link_names(handle.get()) : std::vector<std::string>{};
}

TreeNode RawFile::tree() const {
    SeenGroups seen;
    TreeNode root = describe_object(file_.get(), "/", "/", seen);
    root.name = "/";
    return root;
}

}  // namespace fstore::detail
