#include "h5_heap.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

#include "fstore/error.hpp"
#include "fstore/files.hpp"
#include "fstore/h5.hpp"

namespace fstore::h5 {
namespace {

constexpr const char* raw_reference_tag = "fstore: raw variable-length reference";

// The soft conversion "vlen -> opaque with our tag, of the same size": the buffer already
// holds the on-disk elements, so converting is leaving them where they are. HDF5 offers this
// path for no other pair: it checks the tag and the sizes when it asks (H5T_CONV_INIT).
herr_t keep_raw_reference(hid_t source, hid_t destination, H5T_cdata_t* cdata, std::size_t /*count*/,
                          std::size_t /*buf_stride*/, std::size_t /*bkg_stride*/, void* /*buf*/, void* /*bkg*/,
                          hid_t /*dxpl*/) noexcept {
    switch (cdata->command) {
    case H5T_CONV_INIT: {
        cdata->need_bkg = H5T_BKG_NO;
        if (H5Tget_class(destination) != H5T_OPAQUE) return -1;
        char* tag = H5Tget_tag(destination);
        const bool ours = tag != nullptr && std::strcmp(tag, raw_reference_tag) == 0;
        if (tag != nullptr) H5free_memory(tag);
        return ours && H5Tget_size(source) == H5Tget_size(destination) ? 0 : -1;
    }
    case H5T_CONV_CONV:
    case H5T_CONV_FREE:
        return 0;
    default:
        return -1;
    }
}

// The opaque type a reference of `size` bytes reads into (registering the path once).
Datatype raw_reference_type(std::size_t size) {
    static std::once_flag registered;
    std::call_once(registered, [] {
        Datatype vlen(H5Tcopy(H5T_C_S1), "cannot create a string type");
        check_status(H5Tset_size(vlen, H5T_VARIABLE), "cannot create a string type");
        Datatype opaque(H5Tcreate(H5T_OPAQUE, 16), "cannot create an opaque type");
        check_status(H5Tset_tag(opaque, raw_reference_tag), "cannot tag an opaque type");
        check_status(H5Tregister(H5T_PERS_SOFT, "fstore raw vlen reference", vlen, opaque, keep_raw_reference),
                     "cannot register the raw vlen reference conversion");
    });
    Datatype type(H5Tcreate(H5T_OPAQUE, size), "cannot create an opaque type");
    check_status(H5Tset_tag(type, raw_reference_tag), "cannot tag an opaque type");
    return type;
}

std::uint64_t decode(const unsigned char* p, std::size_t size) {
    std::uint64_t value = 0;
    for (std::size_t i = size; i-- > 0;) value = (value << 8) | p[i];
    return value;
}

constexpr std::uint64_t align8(std::uint64_t n) { return (n + 7) & ~std::uint64_t{7}; }

// The file's layout parameters that the heap's encoding depends on.
struct Encoding {
    std::size_t address_size = 8;  // superblock "size of offsets"
    std::size_t length_size = 8;   // superblock "size of lengths"
    std::uint64_t base = 0;        // where address 0 is (after a user block)
    std::size_t reference_size() const { return 4 + address_size + 4; }  // length, collection, index
};

struct Reference {
    std::uint32_t length = 0;
    std::uint64_t collection = 0;
    std::uint32_t index = 0;
};

// All `size` bytes at `offset`, or false (a failed read, or the file ends first).
bool read_exactly(int fd, void* buffer, std::size_t size, std::uint64_t offset) {
    return pread_full(fd, buffer, size, offset) == static_cast<std::int64_t>(size);
}

// A collection's objects (index -> size), walked the way HDF5 1.10's parser walks them
// (H5HG__cache_heap_deserialize) but refusing every size that parser would trust into an
// out-of-bounds copy or an endless loop. Returns why the collection is damaged, "" when it
// is sound, nullopt when it cannot be read (HDF5's own read then reports that I/O error).
std::optional<std::string> walk_collection(int fd, std::uint64_t file_size, const Encoding& encoding, std::uint64_t address,
                            std::map<std::uint32_t, std::uint64_t>& objects) {
    const std::uint64_t header_size = align8(8 + encoding.length_size);
    const std::uint64_t object_header_size = 8 + encoding.length_size;
    const std::uint64_t at = encoding.base + address;
    if (at >= file_size || file_size - at < header_size) return "it lies past the end of the file";
    unsigned char header[32] = {};
    if (!read_exactly(fd, header, header_size, at)) return std::nullopt;
    if (std::memcmp(header, "GCOL", 4) != 0 || header[4] != 1) return "no global heap collection starts there";
    const std::uint64_t size = decode(header + 8, encoding.length_size);
    if (size < header_size) return "its size (" + std::to_string(size) + " bytes) is smaller than its header";
    if (size > file_size - at)
        return "its size (" + std::to_string(size) + " bytes) runs past the end of the file";
    // HDF5 sizes a collection for its objects (4 KiB at least): strings of a store are short,
    // so a bigger one is damage, not something to allocate.
    constexpr std::uint64_t largest_plausible = std::uint64_t{1} << 30;
    if (size > largest_plausible) return "its size (" + std::to_string(size) + " bytes) is implausible";
    std::vector<unsigned char> bytes(size);
    if (!read_exactly(fd, bytes.data(), bytes.size(), at)) return std::nullopt;
    std::uint64_t p = header_size;
    // Less room than an object header is free space without one.
    while (size - p >= object_header_size) {
        const auto index = static_cast<std::uint32_t>(decode(&bytes[p], 2));
        const std::uint64_t object_size = decode(&bytes[p + 8], encoding.length_size);
        // The free-space object (index 0) counts its header in its size; the others do not.
        const std::uint64_t need = index == 0 ? object_size
                                   : object_size > size ? size + 1
                                                        : object_header_size + align8(object_size);
        const auto where = [&] { return " at byte " + std::to_string(at + p); };
        if (index == 0 && need < object_header_size)
            return "its free space" + where() + " claims " + std::to_string(object_size) + " bytes";
        if (need > size - p)
            return "object " + std::to_string(index) + where() + " (" + std::to_string(object_size) +
                   " bytes) runs past the collection's end";
        if (index != 0 && !objects.emplace(index, object_size).second)
            return "object " + std::to_string(index) + " appears twice";
        p += need;
    }
    return "";
}

// Checks `count` references (raw, as read into `raw`) of the file that `object` is in.
void check_references(hid_t object, const std::vector<unsigned char>& raw, std::size_t count,
                      const Encoding& encoding, const std::string& what) {
    std::vector<Reference> references;
    for (std::size_t i = 0; i < count; ++i) {
        const unsigned char* p = raw.data() + i * encoding.reference_size();
        Reference r;
        r.length = static_cast<std::uint32_t>(decode(p, 4));
        r.collection = decode(p + 4, encoding.address_size);
        r.index = static_cast<std::uint32_t>(decode(p + 4 + encoding.address_size, 4));
        if (r.length > 0) references.push_back(r);  // empty strings touch no heap
    }
    if (references.empty()) return;

    char file_name[4096] = "";
    H5Fget_name(object, file_name, sizeof file_name);
    const auto damaged = [&](std::uint64_t address, const std::string& why) {
        return FormatError("store " + quoted(file_name) + ": cannot read " + what +
                           ": the heap holding its strings is damaged (the collection at byte " +
                           std::to_string(encoding.base + address) + ": " + why +
                           "); restore the store from a copy, or rebuild it");
    };
    const Descriptor fd(::open(file_name, O_RDONLY | O_CLOEXEC));
    struct stat info {};
    if (!fd.valid() || ::fstat(fd.get(), &info) != 0) return;  // HDF5's own read reports what is wrong
    std::map<std::uint64_t, std::map<std::uint32_t, std::uint64_t>> collections;
    for (const Reference& r : references) {
        auto [it, fresh] = collections.try_emplace(r.collection);
        if (fresh) {
            const auto why =
                walk_collection(fd.get(), static_cast<std::uint64_t>(info.st_size), encoding, r.collection, it->second);
            if (!why) return;  // unreadable: not damage to report here
            if (!why->empty()) throw damaged(r.collection, *why);
        }
        const auto found = it->second.find(r.index);
        if (found == it->second.end())
            throw damaged(r.collection, "it holds no object " + std::to_string(r.index));
        if (found->second != r.length)
            throw damaged(r.collection, "object " + std::to_string(r.index) + " holds " +
                                            std::to_string(found->second) + " bytes, the string " +
                                            std::to_string(r.length));
    }
}

// The encoding of the file that `object` is in; flushes a file open for writing, so that
// its heap is on disk.
std::optional<Encoding> file_encoding(hid_t object) {
    const File file(H5Iget_file_id(object));
    if (!file.valid()) return std::nullopt;
    unsigned intent = 0;
    if (H5Fget_intent(file, &intent) < 0) return std::nullopt;
    if ((intent & H5F_ACC_RDWR) != 0 && H5Fflush(file, H5F_SCOPE_LOCAL) < 0) return std::nullopt;
    const PropList creation(H5Fget_create_plist(file));
    if (!creation.valid()) return std::nullopt;
    Encoding encoding;
    hsize_t user_block = 0;
    if (H5Pget_sizes(creation, &encoding.address_size, &encoding.length_size) < 0 ||
        H5Pget_userblock(creation, &user_block) < 0)
        return std::nullopt;
    if (encoding.address_size > 8 || encoding.length_size > 8) return std::nullopt;
    encoding.base = user_block;
    return encoding;
}

}  // namespace

void check_string_heap(hid_t dataset, hid_t mem_space, hid_t file_space, const std::string& what) {
    const hssize_t count = H5Sget_select_npoints(mem_space);
    const auto encoding = file_encoding(dataset);
    if (count <= 0 || !encoding) return;
    const Datatype type = raw_reference_type(encoding->reference_size());
    std::vector<unsigned char> raw(static_cast<std::size_t>(count) * encoding->reference_size());
    if (H5Dread(dataset, type, mem_space, file_space, H5P_DEFAULT, raw.data()) < 0) return;
    check_references(dataset, raw, static_cast<std::size_t>(count), *encoding, what);
}

void check_attribute_string_heap(hid_t attribute, const std::string& what) {
    const Dataspace space(H5Aget_space(attribute));
    const hssize_t count = space.valid() ? H5Sget_simple_extent_npoints(space) : -1;
    const auto encoding = file_encoding(attribute);
    if (count <= 0 || !encoding) return;
    const Datatype type = raw_reference_type(encoding->reference_size());
    std::vector<unsigned char> raw(static_cast<std::size_t>(count) * encoding->reference_size());
    if (H5Aread(attribute, type, raw.data()) < 0) return;
    check_references(attribute, raw, static_cast<std::size_t>(count), *encoding, what);
}

}  // namespace fstore::h5
