#include "fstore/h5.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>

#include "fstore/cli.hpp"
#include "fstore/error.hpp"
#include "fstore/lzf_filter.hpp"
#include "h5_heap.hpp"

namespace fstore::h5 {
namespace {

struct ErrorWalk {
    std::string innermost;
    bool lock = false;
    bool truncated = false;
    bool marked_open = false;
    bool filter = false;
    bool io = false;  // the file system refused a read/write/seek/truncate (disk full, EIO)
};

// HDF5's descriptions end in the values it had at hand ("truncated file: eof = 2000,
// sblock->base_addr = 0, stored_eof = 50731"): internals that mean nothing to a user and
// make a message unreadable. Keeps the words before the first "key = value", plus the
// operating system's reason when HDF5 quotes it ("error message = 'Permission denied'").
std::string without_internals(const std::string& description) {
    const auto first_value = description.find(" = ");
    if (first_value == std::string::npos) return description;
    const auto end_of_words = description.find_last_of(":,", first_value);
    std::string words = end_of_words == std::string::npos ? "" : description.substr(0, end_of_words);
    const std::string os_reason_key = "error message = '";
    const auto os_reason = description.find(os_reason_key);
    if (os_reason != std::string::npos) {
        const auto start = os_reason + os_reason_key.size();
        std::string reason = description.substr(start, description.find('\'', start) - start);
        if (!reason.empty()) reason[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(reason[0])));
        words += (words.empty() ? "" : " ") + ("(" + reason + ")");
    }
    return words;
}

herr_t walk_error(unsigned /*n*/, const H5E_error2_t* err, void* data) noexcept {
    auto* walk = static_cast<ErrorWalk*>(data);
    // Downward walk: the last entry visited is where the failure was first detected.
    walk->innermost = err->desc != nullptr ? without_internals(err->desc) : "";
    if (err->min_num == H5E_CANTLOCKFILE || err->min_num == H5E_CANTLOCK) walk->lock = true;
    if (err->min_num == H5E_TRUNCATED) walk->truncated = true;
    if (err->maj_num == H5E_PLINE) walk->filter = true;
    if (err->maj_num == H5E_IO || err->min_num == H5E_WRITEERROR || err->min_num == H5E_SEEKERROR)
        walk->io = true;
    std::string lower = walk->innermost;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    // Word-level match: "superblock" must not count.
    for (const char* phrase : {"unable to lock", "lock file", "file is locked", "locked by"})
        if (lower.find(phrase) != std::string::npos) walk->lock = true;
    if (lower.find("already open for write") != std::string::npos) walk->marked_open = true;
    return 0;
}

ErrorWalk walk_errors() {
    ErrorWalk walk;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_error, &walk);
    return walk;
}

// Frees the strings HDF5 allocated for a vlen read, whatever happens after the read.
struct VlenBuffer {
    std::vector<char*> pointers;
    hid_t type;
    hid_t space;
    ~VlenBuffer() {
        if (!pointers.empty()) H5Dvlen_reclaim(type, space, H5P_DEFAULT, pointers.data());
    }
};

}  // namespace

void init() {
    lzf::register_filter();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Failure last_failure() {
    const ErrorWalk walk = walk_errors();
    return {walk.innermost, walk.lock, walk.truncated, walk.marked_open, walk.io, walk.filter};
}

void fail(const std::string& what) {
    const int error = errno;  // before anything else can change it
    const ErrorWalk walk = walk_errors();
    const std::string message = walk.innermost.empty() ? what : what + ": " + walk.innermost;
    // HDF5's own message often names the system error already: not twice.
    // (Compared ignoring case: the message may hold HDF5's lowercased copy of it.)
    const auto lower = [](std::string text) {
        for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return text;
    };
    const std::string reason = std::strerror(error);
    const std::string cause = lower(message).find(lower(reason)) == std::string::npos ? " (" + reason + ")" : "";
    // A failing disk is not a malformed file: say so, and point at the likely cause.
    if (walk.io && (error == ENOSPC || error == EDQUOT || error == EFBIG))
        throw IoError(message + cause + "; free disk space, then rerun to resume");
    if (walk.io && !walk.filter && error != 0)
        throw IoError(message + cause + "; check the disk and the file system, then rerun");
    throw FormatError(message);
}

namespace {

// "row 3", "rows 0..299": rows [start, start + count) in messages.
std::string row_range(hsize_t start, hsize_t count) {
    return count == 1 ? "row " + std::to_string(start)
                      : "rows " + std::to_string(start) + ".." + std::to_string(start + count - 1);
}

// Whether `type` is a variable-length string (its values live in the global heap).
bool is_vlen_string(hid_t type) { return H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0; }

}  // namespace

void fail_row_read(hid_t dataset, hsize_t start, hsize_t count) {
    // The failure first: the calls naming the dataset reset HDF5's error stack (and errno).
    const int error = errno;
    const ErrorWalk walk = walk_errors();
    char file_name[4096] = "", object_name[1024] = "";
    H5Fget_name(dataset, file_name, sizeof file_name);
    H5Iget_name(dataset, object_name, sizeof object_name);
    const std::string what = "store " + quoted(file_name) + ": cannot read " + row_range(start, count) + " of " +
                             object_name +
                             (walk.innermost.empty() ? "" : " (" + walk.innermost + ")");
    // A failed read(2) is an I/O error; a chunk read whole that fails to decompress (the
    // filter pipeline's error, with an I/O error around it) is damage at a place.
    if (walk.io && !walk.filter)
        throw IoError(what + ": the file system failed to read it (" + std::strerror(error) +
                      "); check the disk (or the network file system), then retry");
    throw FormatError(what + ": the file is damaged there; restore it from a copy, or rebuild the store");
}

hid_t check(hid_t id, const char* what) {
    if (id < 0) fail(what);
    return id;
}

herr_t check_status(herr_t status, const char* what) {
    if (status < 0) fail(what);
    return status;
}

Datatype half_type() {
    // HDF5 1.10 has no predefined half: derive it from float32 (recipe h5py's type equals).
    Datatype type(H5Tcopy(H5T_IEEE_F32LE), "cannot create the half-float type");
    check_status(H5Tset_fields(type, 15, 10, 5, 0, 10), "cannot create the half-float type");
    check_status(H5Tset_size(type, 2), "cannot create the half-float type");
    check_status(H5Tset_ebias(type, 15), "cannot create the half-float type");
    return type;
}

Datatype utf8_string_type() {
    Datatype type(H5Tcopy(H5T_C_S1), "cannot create the string type");
    check_status(H5Tset_size(type, H5T_VARIABLE), "cannot create the string type");
    check_status(H5Tset_cset(type, H5T_CSET_UTF8), "cannot create the string type");
    check_status(H5Tset_strpad(type, H5T_STR_NULLTERM), "cannot create the string type");
    return type;
}

bool is_half(hid_t type) {
    if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 2) return false;
    std::size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) return false;
    return spos == 15 && epos == 10 && esize == 5 && mpos == 0 && msize == 10 && H5Tget_ebias(type) == 15;
}

bool exists(hid_t loc, const std::string& name) {
    const htri_t found = H5Lexists(loc, name.c_str(), H5P_DEFAULT);
    if (found < 0) fail("cannot look up '" + name + "'");
    return found > 0;
}

H5O_type_t object_type(hid_t loc, const std::string& name) {
    H5O_info_t info;
    if (H5Oget_info_by_name2(loc, name.c_str(), &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return H5O_TYPE_UNKNOWN;
    return info.type;
}

Dataset open_dataset(hid_t loc, const std::string& name, hid_t dapl) {
    const hid_t id = H5Dopen2(loc, name.c_str(), dapl);
    if (id < 0) fail("cannot open dataset '" + name + "'");
    return Dataset(id);
}

Group open_group(hid_t loc, const std::string& name) {
    const hid_t id = H5Gopen2(loc, name.c_str(), H5P_DEFAULT);
    if (id < 0) fail("cannot open group '" + name + "'");
    return Group(id);
}

Group create_group(hid_t loc, const std::string& name) {
    const hid_t id = H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (id < 0) fail("cannot create group '" + name + "'");
    return Group(id);
}

std::vector<hsize_t> dims(hid_t dataset) {
    Dataspace space(H5Dget_space(dataset), "cannot read a dataset's shape");
    const int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0) fail("cannot read a dataset's shape");
    std::vector<hsize_t> out(static_cast<std::size_t>(rank));
    if (rank > 0) check_status(H5Sget_simple_extent_dims(space, out.data(), nullptr),
                               "cannot read a dataset's shape");
    return out;
}

std::vector<hsize_t> chunk_dims(hid_t dataset) {
    PropList dcpl(H5Dget_create_plist(dataset), "cannot read a dataset's layout");
    if (H5Pget_layout(dcpl) != H5D_CHUNKED) return {};
    hsize_t chunk[H5S_MAX_RANK];
    const int rank = H5Pget_chunk(dcpl, H5S_MAX_RANK, chunk);
    if (rank < 0) fail("cannot read a dataset's chunk shape");
    return {chunk, chunk + rank};
}

std::vector<std::string> link_names(hid_t group) {
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
    };
    hsize_t index = 0;
    check_status(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, collect, &names),
                 "cannot list a group");
    return names;
}

Dataspace select_rows(hid_t dataset, hsize_t start, hsize_t count) {
    Dataspace space(H5Dget_space(dataset), "cannot select rows");
    const int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> shape(static_cast<std::size_t>(rank));
    H5Sget_simple_extent_dims(space, shape.data(), nullptr);
    std::vector<hsize_t> offset(shape.size(), 0);
    offset[0] = start;
    shape[0] = count;
    check_status(H5Sselect_hyperslab(space, H5S_SELECT_SET, offset.data(), nullptr,
                                     shape.data(), nullptr),
                 "cannot select rows");
    return space;
}

Dataspace simple_space(const std::vector<hsize_t>& shape) {
    return Dataspace(H5Screate_simple(static_cast<int>(shape.size()), shape.data(), nullptr),
                     "cannot create a dataspace");
}


std::vector<std::string> read_strings(hid_t dataset, hsize_t start, hsize_t count) {
    std::vector<std::string> out;
    if (count == 0) return out;
    Dataspace file_space = select_rows(dataset, start, count);
    Dataspace mem_space = simple_space({count});
    // h5py writes vlen UTF-8, but also vlen ASCII (string_dtype('ascii')) and fixed-length
    // bytes ('S8'); HDF5 converts none of them to vlen UTF-8, so read each as it is stored.
    Datatype stored(H5Dget_type(dataset), "cannot read the type of a string dataset");
    const H5T_cset_t cset = H5Tget_class(stored) == H5T_STRING ? H5Tget_cset(stored) : H5T_CSET_UTF8;
    if (H5Tget_class(stored) == H5T_STRING && H5Tis_variable_str(stored) == 0) {
        const std::size_t size = H5Tget_size(stored);
        Datatype fixed(H5Tcopy(stored), "cannot copy a string type");
        std::vector<char> bytes(size * count);
        if (H5Dread(dataset, fixed, mem_space, file_space, H5P_DEFAULT, bytes.data()) < 0)
            fail_row_read(dataset, start, count);
        const bool space_padded = H5Tget_strpad(stored) == H5T_STR_SPACEPAD;
        out.reserve(count);
        for (hsize_t i = 0; i < count; ++i) {
            std::string value(bytes.data() + i * size, size);
            value.resize(std::min(value.find('\0'), value.size()));
            if (space_padded) value.erase(value.find_last_not_of(' ') + 1);
            out.push_back(std::move(value));
        }
        return out;
    }
    Datatype type = utf8_string_type();
    if (cset == H5T_CSET_ASCII) check_status(H5Tset_cset(type, H5T_CSET_ASCII), "cannot make an ASCII string type");
    {
        char object_name[1024] = "";
        H5Iget_name(dataset, object_name, sizeof object_name);
        check_string_heap(dataset, mem_space, file_space, row_range(start, count) + " of " + object_name);
    }
    VlenBuffer buffer{std::vector<char*>(count, nullptr), type, mem_space};
    if (H5Dread(dataset, type, mem_space, file_space, H5P_DEFAULT, buffer.pointers.data()) < 0) {
        buffer.pointers.clear();  // nothing to reclaim from a failed read
        fail_row_read(dataset, start, count);
    }
    out.reserve(count);
    for (const char* s : buffer.pointers) out.emplace_back(s != nullptr ? s : "");
    return out;
}

void write_strings(hid_t dataset, hsize_t start, const std::vector<std::string>& values) {
    if (values.empty()) return;
    std::vector<const char*> pointers;
    pointers.reserve(values.size());
    for (const auto& v : values) pointers.push_back(v.c_str());
    Datatype type = utf8_string_type();
    Dataspace file_space = select_rows(dataset, start, values.size());
    Dataspace mem_space = simple_space({values.size()});
    check_status(H5Dwrite(dataset, type, mem_space, file_space, H5P_DEFAULT, pointers.data()),
                 "cannot write strings");
}

bool has_attribute(hid_t obj, const std::string& name) {
    const htri_t found = H5Aexists(obj, name.c_str());
    if (found < 0) fail("cannot look up attribute '" + name + "'");
    return found > 0;
}

std::optional<AttrValue> read_attribute(hid_t obj, const std::string& name) {
    if (!has_attribute(obj, name)) return std::nullopt;
    const std::string what = "cannot read attribute '" + name + "'";
    Attribute attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), what.c_str());
    Dataspace space(H5Aget_space(attr), what.c_str());
    if (H5Sget_simple_extent_npoints(space) != 1) return std::nullopt;
    Datatype type(H5Aget_type(attr), what.c_str());
    switch (H5Tget_class(type)) {
    case H5T_INTEGER: {
        std::int64_t value = 0;
        check_status(H5Aread(attr, H5T_NATIVE_INT64, &value), what.c_str());
        return AttrValue(value);
    }
    case H5T_FLOAT: {
        double value = 0;
        check_status(H5Aread(attr, H5T_NATIVE_DOUBLE, &value), what.c_str());
        return AttrValue(value);
    }
    case H5T_STRING: {
        const htri_t variable = H5Tis_variable_str(type);
        if (variable < 0) fail(what);
        if (variable > 0) {
            check_attribute_string_heap(attr, "attribute '" + name + "'");
            Datatype mem(H5Tcopy(type), what.c_str());
            char* value = nullptr;
            check_status(H5Aread(attr, mem, &value), what.c_str());
            std::string out = value != nullptr ? value : "";
            if (value != nullptr) H5free_memory(value);
            return AttrValue(out);
        }
        const std::size_t size = H5Tget_size(type);
        std::string out(size, '\0');
        check_status(H5Aread(attr, type, out.data()), what.c_str());
        // Fixed-length strings may be null-terminated, null-padded or space-padded.
        const auto end = out.find('\0');
        if (end != std::string::npos) out.resize(end);
        if (H5Tget_strpad(type) == H5T_STR_SPACEPAD)
            out.erase(out.find_last_not_of(' ') + 1);
        return AttrValue(out);
    }
    default:
        return std::nullopt;
    }
}

namespace {

// h5py's bool: an enum of two members named FALSE and TRUE.
bool is_h5py_bool(hid_t type) {
    if (H5Tget_class(type) != H5T_ENUM || H5Tget_nmembers(type) != 2) return false;
    char* first = H5Tget_member_name(type, 0);
    char* second = H5Tget_member_name(type, 1);
    const bool names = first != nullptr && second != nullptr && std::strcmp(first, "FALSE") == 0 &&
                       std::strcmp(second, "TRUE") == 0;
    if (first != nullptr) H5free_memory(first);
    if (second != nullptr) H5free_memory(second);
    return names;
}

// The attribute's elements, flat, in JSON.
std::vector<nlohmann::json> attribute_elements(hid_t attr, hid_t type, std::size_t count, const std::string& what) {
    std::vector<nlohmann::json> out;
    out.reserve(count);
    const H5T_class_t kind = H5Tget_class(type);
    if (kind == H5T_INTEGER || (kind == H5T_ENUM && !is_h5py_bool(type))) {
        const bool unsigned_64 = kind == H5T_INTEGER && H5Tget_sign(type) == H5T_SGN_NONE && H5Tget_size(type) == 8;
        if (unsigned_64) {
            std::vector<std::uint64_t> values(count);
            check_status(H5Aread(attr, H5T_NATIVE_UINT64, values.data()), what.c_str());
            for (auto v : values) out.emplace_back(v);
        } else {
            std::vector<std::int64_t> values(count);
            check_status(H5Aread(attr, H5T_NATIVE_INT64, values.data()), what.c_str());
            for (auto v : values) out.emplace_back(v);
        }
    } else if (kind == H5T_ENUM) {
        std::vector<std::int8_t> values(count);
        check_status(H5Aread(attr, H5T_NATIVE_INT8, values.data()), what.c_str());
        for (auto v : values) out.emplace_back(v != 0);
    } else if (kind == H5T_FLOAT) {
        std::vector<double> values(count);
        check_status(H5Aread(attr, H5T_NATIVE_DOUBLE, values.data()), what.c_str());
        for (auto v : values) out.push_back(json_number(v));
    } else if (kind == H5T_STRING) {
        const htri_t variable = H5Tis_variable_str(type);
        if (variable < 0) fail(what);
        if (variable > 0) {
            char name[1024] = "";
            H5Aget_name(attr, sizeof name, name);
            check_attribute_string_heap(attr, "attribute '" + std::string(name) + "'");
            std::vector<char*> values(count, nullptr);
            Datatype mem(H5Tcopy(type), what.c_str());
            check_status(H5Aread(attr, mem, values.data()), what.c_str());
            for (char* v : values) {
                out.emplace_back(v != nullptr ? std::string(v) : std::string());
                if (v != nullptr) H5free_memory(v);
            }
        } else {
            const std::size_t size = H5Tget_size(type);
            std::string buffer(size * count, '\0');
            check_status(H5Aread(attr, type, buffer.data()), what.c_str());
            for (std::size_t i = 0; i < count; ++i) {
                std::string v = buffer.substr(i * size, size);
                if (const auto end = v.find('\0'); end != std::string::npos) v.resize(end);
                if (H5Tget_strpad(type) == H5T_STR_SPACEPAD) v.erase(v.find_last_not_of(' ') + 1);
                out.emplace_back(std::move(v));
            }
        }
    } else {
        out.assign(count, nullptr);
    }
    return out;
}

nlohmann::json nest(const std::vector<nlohmann::json>& flat, const std::vector<hsize_t>& dims, std::size_t axis,
                    std::size_t& at) {
    nlohmann::json list = nlohmann::json::array();
    for (hsize_t i = 0; i < dims[axis]; ++i) {
        list.push_back(axis + 1 == dims.size() ? flat[at++] : nest(flat, dims, axis + 1, at));
    }
    return list;
}

}  // namespace

std::optional<nlohmann::json> read_attribute_json(hid_t obj, const std::string& name) {
    if (!has_attribute(obj, name)) return std::nullopt;
    const std::string what = "cannot read attribute '" + name + "'";
    Attribute attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), what.c_str());
    Dataspace space(H5Aget_space(attr), what.c_str());
    if (H5Sget_simple_extent_type(space) == H5S_NULL) return nlohmann::json(nullptr);
    const int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0) fail(what);
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    if (rank > 0 && H5Sget_simple_extent_dims(space, dims.data(), nullptr) < 0) fail(what);
    std::size_t count = 1;
    for (hsize_t d : dims) count *= static_cast<std::size_t>(d);
    Datatype type(H5Aget_type(attr), what.c_str());
    const auto flat = count == 0 ? std::vector<nlohmann::json>() : attribute_elements(attr, type, count, what);
    if (rank == 0) return flat.empty() ? nlohmann::json(nullptr) : flat.front();
    std::size_t at = 0;
    return nest(flat, dims, 0, at);
}

std::vector<std::string> attribute_names(hid_t obj) {
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->emplace_back(name);
        return 0;
    };
    hsize_t index = 0;
    check_status(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &index, collect, &names),
                 "cannot list attributes");
    return names;
}

void delete_attribute(hid_t obj, const std::string& name) {
    if (!has_attribute(obj, name)) return;
    const std::string what = "cannot delete attribute '" + name + "'";
    {
        // Deleting frees the value's heap objects: a damaged heap must not be walked.
        Attribute attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), what.c_str());
        Datatype type(H5Aget_type(attr), what.c_str());
        if (is_vlen_string(type)) check_attribute_string_heap(attr, "attribute '" + name + "'");
    }
    if (H5Adelete(obj, name.c_str()) < 0) fail(what);
}

void write_attribute(hid_t obj, const std::string& name, const AttrValue& value) {
    const std::string what = "cannot write attribute '" + name + "'";
    delete_attribute(obj, name);  // the type may change: replace, never overwrite in place
    Dataspace space(H5Screate(H5S_SCALAR), what.c_str());
    if (const auto* i = std::get_if<std::int64_t>(&value)) {
        Attribute attr(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                       what.c_str());
        check_status(H5Awrite(attr, H5T_NATIVE_INT64, i), what.c_str());
    } else if (const auto* d = std::get_if<double>(&value)) {
        Attribute attr(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                       what.c_str());
        check_status(H5Awrite(attr, H5T_NATIVE_DOUBLE, d), what.c_str());
    } else {
        Datatype type = utf8_string_type();
        Attribute attr(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                       what.c_str());
        const char* text = std::get<std::string>(value).c_str();
        check_status(H5Awrite(attr, type, &text), what.c_str());
    }
}

}  // namespace fstore::h5
