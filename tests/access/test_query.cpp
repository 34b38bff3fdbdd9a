// Tests of the query library: numpy index semantics (checked against numpy itself), the
// tree drawing, .npy/.npz output (loaded by numpy; devices, FIFOs, symlinks, full disks),
// and verify's findings on stores broken on purpose (written by the h5py reference writer,
// tests/python/fstore_ref/store.py).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/half.hpp"
#include "fstore/npy.hpp"
#include "fstore/query.hpp"
#include "../common/child_process.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

// A fresh directory per test, removed afterwards.
class TempDir {
public:
    TempDir() {
        std::random_device rd;
        path_ = fs::temp_directory_path() / ("fstore_access_test_" + std::to_string(rd()));
        fs::create_directories(path_);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Runs Debian's python3 with `script` (written to a file) and returns its stdout.
std::string run_python(const TempDir& dir, const std::string& script, int* status = nullptr) {
    const auto script_path = dir.path() / "script.py";
    const auto out_path = dir.path() / "script.out";
    std::ofstream(script_path) << script;
    const std::string command = std::string("PYTHONPATH='") + FSTORE_SOURCE_DIR + "/tests/python' '" + FSTORE_PYTHON +
                                "' '" + script_path.string() + "' > '" + out_path.string() + "'";
    const int rc = std::system(command.c_str());
    if (status) *status = rc;
    else EXPECT_EQ(rc, 0) << "python failed: " << command;
    return read_file(out_path);
}

fs::path write_reference_store(const TempDir& dir, const std::string& name, const std::string& args = "") {
    const auto path = dir.path() / name;
    const std::string command = std::string("'") + FSTORE_PYTHON + "' '" + FSTORE_SOURCE_DIR +
                                "/tests/python/fstore_ref/store.py' write '" + path.string() + "' " + args;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return path;
}

// What `call` throws: its exit code and message (ExitCode::ok and "" when it throws nothing).
struct Thrown {
    fstore::ExitCode code = fstore::ExitCode::ok;
    std::string message;
};
template <class Call>
Thrown thrown_by(Call&& call) {
    try {
        call();
    } catch (const fstore::Error& e) {
        return {e.exit_code(), e.what()};
    }
    return {};
}

// Overwrites chunk `index` of `dataset` with 0xff bytes, which its LZF filter then fails to
// decompress. `prepare`: Python lines run on the file first (open as f, mode 'a'), e.g. to
// write zeros there: LZF stores random data raw, with no filter left to fail.
void damage_chunk(const TempDir& dir, const fs::path& path, const std::string& dataset, int index,
                  const std::string& prepare = "") {
    run_python(dir, "import h5py\n"
                    "with h5py.File('" + path.string() + "', 'a') as f:\n" + prepare +
                    "    info = f['" + dataset + "'].id.get_chunk_info(" + std::to_string(index) + ")\n"
                    "    assert info.filter_mask == 0, info\n"
                    "with open('" + path.string() + "', 'r+b') as out:\n"
                    "    out.seek(info.byte_offset)\n"
                    "    out.write(b'\\xff' * info.size)\n");
}

std::string slice_text(const fstore::Slice& s) {
    auto part = [](const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : std::string(); };
    return part(s.start) + ":" + part(s.stop) + ":" + part(s.step);
}

}  // namespace

// ---- index selections -------------------------------------------------------------------

TEST(IndexSelection, ParsesIndicesAndSlices) {
    const auto all = fstore::parse_index_selection({});
    EXPECT_EQ(all.kind, fstore::IndexSelection::Kind::all);

    const auto list = fstore::parse_index_selection({"3", "-1", "0"});
    ASSERT_EQ(list.kind, fstore::IndexSelection::Kind::list);
    ASSERT_EQ(list.indices.size(), 3u);
    EXPECT_EQ(list.indices[0].value, 3);
    EXPECT_EQ(list.indices[1].value, -1);
    EXPECT_EQ(list.indices[2].value, 0);
    EXPECT_EQ(list.indices[1].text, "-1");

    const auto s = fstore::parse_index_selection({"-5:"});
    ASSERT_EQ(s.kind, fstore::IndexSelection::Kind::slice);
    EXPECT_EQ(s.slice.start, std::optional<std::int64_t>(-5));
    EXPECT_FALSE(s.slice.stop.has_value());
    EXPECT_FALSE(s.slice.step.has_value());

    const auto t = fstore::parse_index_selection({"::-2"});
    EXPECT_FALSE(t.slice.start.has_value());
    EXPECT_EQ(t.slice.step, std::optional<std::int64_t>(-2));
}

TEST(IndexSelection, RejectsMalformedInput) {
    for (const std::vector<std::string>& bad :
         {std::vector<std::string>{"x"}, {"1.5"}, {"1:2:3:4"}, {"1:x"}, {"::0"}, {"1:3", "5"}, {""}, {"+-1"}}) {
        EXPECT_THROW(fstore::parse_index_selection(bad), fstore::UsageError) << bad[0];
    }
}

TEST(IndexSelection, OutOfRangeNamesTheValidRange) {
    EXPECT_EQ(fstore::normalize_index(-1, 10, "x"), 9);
    EXPECT_EQ(fstore::normalize_index(-10, 10, "x"), 0);
    try {
        fstore::normalize_index(10, 10, "split 'train'");
        FAIL() << "no exception";
    } catch (const fstore::UsageError& e) {
        EXPECT_THAT(e.what(), HasSubstr("split 'train'"));
        EXPECT_THAT(e.what(), HasSubstr("-10..9"));
        EXPECT_EQ(e.exit_code(), fstore::ExitCode::usage);
    }
    EXPECT_THROW(fstore::normalize_index(-11, 10, "x"), fstore::UsageError);
    EXPECT_THROW(fstore::normalize_index(0, 0, "x"), fstore::UsageError);
    const auto list = fstore::parse_index_selection({"0", "12"});
    EXPECT_THROW(fstore::resolve_selection(list, 12, "x"), fstore::UsageError);
}

// An index past the int64 range is out of range like any other, and the message quotes
// what was typed, not the saturated value; `sample` and `batch --idx` say the same.
TEST(IndexSelection, HugeIndicesAreOutOfRangeAsTyped) {
    for (const std::string typed : {"99999999999999999999", "-99999999999999999999"}) {
        const auto listed = thrown_by(
            [&] { fstore::resolve_selection(fstore::parse_index_selection({typed}), 9, "split 'val'"); });
        EXPECT_EQ(listed.code, fstore::ExitCode::usage);
        EXPECT_EQ(listed.message, "index " + typed + " is out of range for split 'val' (9 rows): use -9..8");
        const auto sampled =
            thrown_by([&] { fstore::normalize_index(fstore::parse_index(typed, "index"), 49, "the store"); });
        EXPECT_EQ(sampled.code, fstore::ExitCode::usage);
        EXPECT_EQ(sampled.message, "index " + typed + " is out of range for the store (49 rows): use -49..48");
    }
    EXPECT_EQ(fstore::parse_index("-3", "index").value, -3);
    const auto bad = thrown_by([] { fstore::parse_index("3x", "index"); });
    EXPECT_EQ(bad.code, fstore::ExitCode::usage);
    EXPECT_THAT(bad.message, HasSubstr("bad index value '3x'"));
}

// Slice parts past the int64 range clamp as numpy's (unbounded) integers do, and a huge
// step does not overflow while walking the rows.
TEST(IndexSelection, HugeSlicePartsMatchNumpy) {
    TempDir dir;
    const std::string huge = "99999999999999999999";
    const std::vector<std::string> slices = {"0:" + huge,        "::" + huge,     "::-" + huge, "-" + huge + ":",
                                             "5::" + huge,       "-2::-" + huge, "-" + huge + ":" + huge + ":3",
                                             huge + ":-" + huge + ":-1"};
    std::string script = "import json, numpy as np\nprint(json.dumps([np.arange(7)[slice(*[int(p) if p else None for p in s.split(':')])].tolist() for s in [";
    for (const auto& s : slices) script += "'" + s + "', ";
    script += "]]))\n";
    const auto expected = nlohmann::json::parse(run_python(dir, script));
    ASSERT_EQ(expected.size(), slices.size());
    for (std::size_t i = 0; i < slices.size(); ++i) {
        const auto got = fstore::resolve_selection(fstore::parse_index_selection({slices[i]}), 7, "x");
        EXPECT_EQ(nlohmann::json(got), expected[i]) << slices[i];
    }
}

// CLI11 hands an option that needs a value the next option ("--idx --json"): the message
// says so instead of calling "--json" a bad index.
TEST(IndexSelection, AnOptionTakenAsAValueIsNamed) {
    EXPECT_EQ(thrown_by([] { fstore::parse_index_selection({"--json"}); }).message,
              "--idx needs values (got option '--json')");
    EXPECT_EQ(thrown_by([] { fstore::parse_count("--json", "--max-templates"); }).message,
              "--max-templates needs a value (got option '--json')");
}

TEST(Numbers, CountsAreWholeNumbersZeroOrMore) {
    EXPECT_EQ(fstore::parse_count("0", "--max-templates"), 0);
    EXPECT_EQ(fstore::parse_count("12", "--max-templates"), 12);
    EXPECT_EQ(fstore::parse_count("99999999999999999999", "--max-templates"), INT64_MAX);  // "all"
    EXPECT_EQ(fstore::parse_count("+3", "--max-templates"), 3);  // a sign, as Python's int() takes it
    for (const std::string negative : {"-1", "-99999999999999999999"}) {
        const auto t = thrown_by([&] { fstore::parse_count(negative, "--max-templates"); });
        EXPECT_EQ(t.code, fstore::ExitCode::usage);
        EXPECT_EQ(t.message, "--max-templates must be 0 or more, not " + negative) << negative;
    }
    for (const std::string bad : {"", "abc", "+", "+-3", " 3", "1.5"}) {
        const auto t = thrown_by([&] { fstore::parse_count(bad, "--max-templates"); });
        EXPECT_EQ(t.code, fstore::ExitCode::usage) << bad;
        EXPECT_THAT(t.message, HasSubstr("bad --max-templates value '" + bad + "'"));
    }
}

// Every slice over a grid of lengths and bounds, compared with numpy's own result.
TEST(IndexSelection, SlicesMatchNumpy) {
    TempDir dir;
    const std::vector<std::optional<std::int64_t>> bounds = {std::nullopt, -12, -7, -3, -1, 0, 1, 2, 5, 6, 7, 12};
    const std::vector<std::optional<std::int64_t>> steps = {std::nullopt, 1, 2, 3, -1, -2, -4};
    const std::vector<std::int64_t> lengths = {0, 1, 6, 7};
    std::vector<std::pair<std::int64_t, fstore::Slice>> cases;
    std::string script = "import json, numpy as np\ncases = [\n";
    auto py = [](const std::optional<std::int64_t>& v) { return v ? std::to_string(*v) : std::string("None"); };
    for (const auto n : lengths)
        for (const auto& a : bounds)
            for (const auto& b : bounds)
                for (const auto& c : steps) {
                    cases.push_back({n, fstore::Slice{a, b, c}});
                    script += "(" + std::to_string(n) + ", slice(" + py(a) + ", " + py(b) + ", " + py(c) + ")),\n";
                }
    script += "]\nprint(json.dumps([np.arange(n)[s].tolist() for n, s in cases]))\n";
    const auto expected = nlohmann::json::parse(run_python(dir, script));
    ASSERT_EQ(expected.size(), cases.size());
    for (std::size_t i = 0; i < cases.size(); ++i) {
        fstore::IndexSelection selection;
        selection.kind = fstore::IndexSelection::Kind::slice;
        selection.slice = cases[i].second;
        const auto got = fstore::resolve_selection(selection, cases[i].first, "x");
        ASSERT_EQ(nlohmann::json(got), expected[i])
            << "n=" << cases[i].first << " slice " << slice_text(cases[i].second);
    }
}

// Negative and positive index lists, compared with numpy fancy indexing.
TEST(IndexSelection, ListsMatchNumpy) {
    TempDir dir;
    const std::vector<std::int64_t> indices = {0, 3, -1, -7, 6, 2, 2};
    const auto got = fstore::resolve_selection(fstore::parse_index_selection({"0", "3", "-1", "-7", "6", "2", "2"}), 7, "x");
    const auto expected = nlohmann::json::parse(
        run_python(dir, "import json, numpy as np\nprint(json.dumps(np.arange(7)[[0, 3, -1, -7, 6, 2, 2]].tolist()))\n"));
    EXPECT_EQ(nlohmann::json(got), expected);
    EXPECT_EQ(got.size(), indices.size());
}

// ---- tree drawing -------------------------------------------------------------------------

TEST(Tree, DrawsConnectorsShapesAndAttributes) {
    fstore::TreeNode root;
    root.name = "/";
    root.attributes = {"D", "T_img"};
    fstore::TreeNode a;
    a.name = "image_features";
    a.kind = fstore::TreeNode::Kind::dataset;
    a.shape = {10, 8};
    a.dtype = "float16";
    fstore::TreeNode group;
    group.name = "templates";
    fstore::TreeNode t;
    t.name = "t01";
    t.attributes = {"K"};
    fstore::TreeNode texts;
    texts.name = "texts";
    texts.kind = fstore::TreeNode::Kind::dataset;
    texts.shape = {15};
    texts.dtype = "str";
    t.children = {texts};
    fstore::TreeNode t2 = t;
    t2.name = "t02";
    group.children = {t, t2};
    root.children = {a, group};
    const auto text = fstore::render_tree(root);
    EXPECT_EQ(text,
              "/  [attrs: D, T_img]\n"
              "├── image_features  (10, 8) float16\n"
              "└── templates/\n"
              "    ├── t01/  [attrs: K]\n"
              "    │   └── texts  (15,) str\n"
              "    └── t02/  [attrs: K]\n"
              "        └── texts  (15,) str\n");
}

// ---- npy / npz ----------------------------------------------------------------------------

TEST(Npy, HeaderIsAlignedVersion1) {
    for (const auto& shape : std::vector<std::vector<std::int64_t>>{{}, {3}, {2, 1152}, {4, 729, 1152}}) {
        const auto h = fstore::npy::header(fstore::DType::f16, shape);
        EXPECT_EQ(h.size() % 64, 0u);
        EXPECT_EQ(h.substr(0, 6), "\x93NUMPY");
        EXPECT_EQ(h[6], 1);
        EXPECT_EQ(h[7], 0);
        EXPECT_EQ(static_cast<std::size_t>(static_cast<unsigned char>(h[8]) | (static_cast<unsigned char>(h[9]) << 8)),
                  h.size() - 10);
        EXPECT_EQ(h.back(), '\n');
    }
    EXPECT_THAT(fstore::npy::header(fstore::DType::i64, {3}), HasSubstr("'shape': (3,)"));
    EXPECT_THAT(fstore::npy::header(fstore::DType::f32, {2, 5}), HasSubstr("'descr': '<f4'"));
}

namespace {

fstore::Array make_array(fstore::DType dtype, std::vector<std::int64_t> shape) {
    fstore::Array a;
    a.dtype = dtype;
    a.shape = std::move(shape);
    const auto n = a.elements();
    a.bytes.resize(static_cast<std::size_t>(n) * fstore::dtype_size(dtype));
    for (std::int64_t i = 0; i < n; ++i) {
        // Values numpy recomputes in the checking script: (i - 7) * 0.25 and i * 1000003 - 5.
        if (dtype == fstore::DType::f16) {
            const auto h = fstore::float_to_half(static_cast<float>(i - 7) * 0.25f);
            std::memcpy(a.bytes.data() + 2 * i, &h, 2);
        } else if (dtype == fstore::DType::f32) {
            const float f = static_cast<float>(i - 7) * 0.25f;
            std::memcpy(a.bytes.data() + 4 * i, &f, 4);
        } else {
            const std::int64_t v = i * 1000003 - 5;
            std::memcpy(a.bytes.data() + 8 * i, &v, 8);
        }
    }
    return a;
}

}  // namespace

TEST(Npy, NumpyLoadsNpyAndNpz) {
    TempDir dir;
    fstore::npy::write_npy(dir.path() / "a.npy", make_array(fstore::DType::f16, {3, 5}));
    fstore::npy::write_npy(dir.path() / "b.npy", make_array(fstore::DType::i64, {7}));
    fstore::npy::write_npy(dir.path() / "e.npy", make_array(fstore::DType::f32, {0, 4}));
    fstore::npy::write_npz(dir.path() / "c.npz", {{"first", make_array(fstore::DType::f32, {2, 3, 4})},
                                                   {"second", make_array(fstore::DType::f16, {6})},
                                                   {"third", make_array(fstore::DType::i64, {2, 2})}});
    const std::string d = dir.path().string();
    const auto out = run_python(dir, R"(import numpy as np, zipfile
d = ')" + d + R"('
def vals(dtype, shape):
    n = int(np.prod(shape))
    i = np.arange(n)
    if dtype == np.int64:
        return (i * 1000003 - 5).astype(np.int64).reshape(shape)
    return ((i - 7).astype(np.float32) * np.float32(0.25)).astype(dtype).reshape(shape)
def same(a, dtype, shape):
    return a.dtype == dtype and a.shape == shape and np.array_equal(a, vals(dtype, shape))
ok = []
ok.append(same(np.load(d + '/a.npy'), np.float16, (3, 5)))
ok.append(same(np.load(d + '/b.npy'), np.int64, (7,)))
ok.append(same(np.load(d + '/e.npy'), np.float32, (0, 4)))
z = np.load(d + '/c.npz')
ok.append(sorted(z.files) == ['first', 'second', 'third'])
ok.append(same(z['first'], np.float32, (2, 3, 4)))
ok.append(same(z['second'], np.float16, (6,)))
ok.append(same(z['third'], np.int64, (2, 2)))
ok.append(all(i.compress_type == zipfile.ZIP_STORED for i in zipfile.ZipFile(d + '/c.npz').infolist()))
print(' '.join('1' if x else '0' for x in ok))
)");
    EXPECT_EQ(out, "1 1 1 1 1 1 1 1\n");
    // No temporary files are left next to the outputs.
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(dir.path())) {
        EXPECT_EQ(entry.path().string().find(".partial-"), std::string::npos) << entry.path();
        ++files;
    }
    EXPECT_EQ(files, 6u);  // a, b, e, c, script.py, script.out
}

TEST(Npy, MissingDirectoryIsNotFound) {
    TempDir dir;
    EXPECT_THROW(fstore::npy::write_npy(dir.path() / "no" / "a.npy", make_array(fstore::DType::f16, {1})),
                 fstore::NotFoundError);
    EXPECT_THROW(fstore::npy::write_npz(dir.path() / "no" / "a.npz", {}), fstore::NotFoundError);
    EXPECT_THROW(fstore::npy::check_output_path(dir.path() / "no" / "a.npz", fstore::npy::FileFormat::npz),
                 fstore::NotFoundError);
}

namespace {

std::vector<std::string> partial_files(const fs::path& dir) {
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.path().filename().string().find(".partial-") != std::string::npos) found.push_back(entry.path());
    }
    return found;
}

fs::perms permissions_of(const fs::path& path) { return fs::status(path).permissions() & fs::perms::mask; }

std::string read_descriptor(int fd) {
    std::string bytes;
    char buffer[4096];
    for (ssize_t n; (n = ::read(fd, buffer, sizeof buffer)) > 0;) bytes.append(buffer, static_cast<std::size_t>(n));
    return bytes;
}

}  // namespace

// --out names: empty, an option CLI11 took as the value, a directory, the wrong extension.
// A target that exists and is not a regular file may have any name.
TEST(Npy, OutNamesAreChecked) {
    using fstore::npy::FileFormat;
    TempDir dir;
    EXPECT_EQ(thrown_by([] { fstore::npy::check_output_path("", FileFormat::npy); }).message,
              "--out needs a file name");
    EXPECT_EQ(thrown_by([] { fstore::npy::check_output_path("--json", FileFormat::npz); }).message,
              "--out needs a file name (got option '--json')");
    const auto wrong_npy = thrown_by([&] { fstore::npy::write_npy(dir.path() / "x.txt", make_array(fstore::DType::f16, {2})); });
    EXPECT_EQ(wrong_npy.code, fstore::ExitCode::usage);
    EXPECT_THAT(wrong_npy.message, HasSubstr("must end in .npy"));
    const auto wrong_npz = thrown_by([&] { fstore::npy::write_npz(dir.path() / "s.npy", {}); });
    EXPECT_EQ(wrong_npz.code, fstore::ExitCode::usage);
    EXPECT_THAT(wrong_npz.message, HasSubstr("must end in .npz"));
    const auto directory = thrown_by([&] { fstore::npy::check_output_path(dir.path(), FileFormat::npy); });
    EXPECT_EQ(directory.code, fstore::ExitCode::usage);
    EXPECT_THAT(directory.message, HasSubstr("it is a directory"));
    EXPECT_TRUE(fs::is_empty(dir.path())) << "a refused name created a file";

    const auto fifo = dir.path() / "out.fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    EXPECT_NO_THROW(fstore::npy::check_output_path(fifo, FileFormat::npy));
    EXPECT_NO_THROW(fstore::npy::check_output_path(fifo, FileFormat::npz));
    // What /dev/stdout is, without touching it: a link to this process's descriptor.
    fs::create_symlink("/proc/self/fd/1", dir.path() / "stdout");
    EXPECT_NO_THROW(fstore::npy::check_output_path(dir.path() / "stdout", FileFormat::npz));
}

// An existing file is replaced through its symlink: the link stays a link, its target gets
// the new bytes and keeps its mode; a dangling link creates its target; a new file gets
// the usual 0666 & ~umask, not a temporary file's 0600.
TEST(Npy, ReplacesTheFileBehindASymlinkKeepingItsMode) {
    TempDir dir;
    const auto array = make_array(fstore::DType::f16, {3, 5});
    fstore::npy::write_npy(dir.path() / "expected.npy", array);
    const auto real = dir.path() / "real.npy";
    const auto link = dir.path() / "link.npy";
    std::ofstream(real) << "old";
    const auto mode_640 = fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read;
    fs::permissions(real, mode_640);
    fs::create_symlink("real.npy", link);

    fstore::npy::write_npy(link, array);
    ASSERT_TRUE(fs::is_symlink(fs::symlink_status(link)));
    EXPECT_EQ(fs::read_symlink(link), fs::path("real.npy"));
    EXPECT_EQ(read_file(real), read_file(dir.path() / "expected.npy"));
    EXPECT_EQ(permissions_of(real), mode_640);

    const auto dangling = dir.path() / "dangling.npz";
    fs::create_symlink("created.npz", dangling);
    fstore::npy::write_npz(dangling, {{"a", array}});
    EXPECT_TRUE(fs::is_symlink(fs::symlink_status(dangling)));
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(dir.path() / "created.npz")));
    const mode_t umask_now = ::umask(0);
    ::umask(umask_now);
    EXPECT_EQ(permissions_of(dir.path() / "created.npz"), static_cast<fs::perms>(0666 & ~umask_now));
    EXPECT_THAT(partial_files(dir.path()), ::testing::IsEmpty());
}

// A FIFO is written in place, never replaced by a regular file. Its reader is open before
// the writers (so they do not block) and the output fits the pipe buffer; had a writer
// replaced the FIFO, this reader would see nothing.
TEST(Npy, WritesIntoAFifoInPlace) {
    TempDir dir;
    const auto fifo = dir.path() / "out.fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
    ASSERT_GE(reader, 0);
    const auto array = make_array(fstore::DType::f32, {2, 3});
    fstore::npy::write_npy(fifo, array);
    fstore::npy::write_npz(fifo, {{"a", array}});
    const std::string got = read_descriptor(reader);
    ::close(reader);
    struct stat after {};
    ASSERT_EQ(::lstat(fifo.c_str(), &after), 0);
    EXPECT_TRUE(S_ISFIFO(after.st_mode));

    fstore::npy::write_npy(dir.path() / "same.npy", array);
    fstore::npy::write_npz(dir.path() / "same.npz", {{"a", array}});
    const auto npy = read_file(dir.path() / "same.npy");
    const auto npz = read_file(dir.path() / "same.npz");
    ASSERT_EQ(got.size(), npy.size() + npz.size());
    EXPECT_EQ(got.substr(0, npy.size()), npy);
    // The zip's member times may differ by a tick: compare everything but the archive bytes.
    EXPECT_EQ(got.substr(npy.size(), 4), "PK\x03\x04");
    EXPECT_NE(got.find(npy, npy.size()), std::string::npos) << "the npz member is not the same .npy";
}

// /proc/self/fd/N and /dev/fd/N (where /dev/stdout leads) are written through the
// descriptor itself; when the pipe's reader has gone, the write fails (EPIPE; SIGPIPE is
// ignored in the child) instead of being reported as written.
TEST(Npy, WritesIntoOwnDescriptorsAndReportsTheirErrors) {
    TempDir dir;
    const auto array = make_array(fstore::DType::i64, {4});
    fstore::npy::write_npy(dir.path() / "same.npy", array);
    for (const std::string prefix : {"/proc/self/fd/", "/dev/fd/"}) {
        int ends[2];
        ASSERT_EQ(::pipe(ends), 0);
        fstore::npy::write_npy(prefix + std::to_string(ends[1]), array);
        ::close(ends[1]);
        EXPECT_EQ(read_descriptor(ends[0]), read_file(dir.path() / "same.npy")) << prefix;
        ::close(ends[0]);
    }
    int ends[2];
    ASSERT_EQ(::pipe(ends), 0);
    ::close(ends[0]);
    const std::string target = "/proc/self/fd/" + std::to_string(ends[1]);
    const auto outcome = fstore::test::run_in_child([&] {
        ::signal(SIGPIPE, SIG_IGN);
        fstore::npy::write_npy(target, array);
    });
    ::close(ends[1]);
    EXPECT_EQ(outcome.exit_code, static_cast<int>(fstore::ExitCode::io)) << outcome.message;
    EXPECT_EQ(outcome.message, "cannot write '" + target + "': Broken pipe: check the device or choose another --out");
}

// A device that refuses writes (ENOSPC) fails with exit 10 and stays a device. The device
// is a private node of /dev/full's (1, 7) in a scratch directory, so a wrong writer could
// only replace that node, never /dev/full. Creating it needs CAP_MKNOD; without it the
// same is checked on a FIFO whose reader leaves without reading: the output is larger
// than the pipe buffer, so the writer always ends in EPIPE.
TEST(Npy, WriteErrorOnADeviceIsAnIoErrorAndKeepsTheDevice) {
    TempDir dir;
    const auto target = dir.path() / "full";
    const bool device = ::mknod(target.c_str(), S_IFCHR | 0666, makedev(1, 7)) == 0;
    if (!device) {
        std::cerr << "no CAP_MKNOD (" << std::strerror(errno) << "): checking a FIFO whose reader leaves instead\n";
        ASSERT_EQ(::mkfifo(target.c_str(), 0600), 0);
    }
    const auto array = make_array(fstore::DType::f32, {128, 256});  // 128 KiB: twice the pipe buffer
    for (const bool npz : {false, true}) {
        const auto outcome = fstore::test::run_in_child([&] {
            ::signal(SIGPIPE, SIG_IGN);
            std::thread leaving_reader;
            if (!device) {
                leaving_reader = std::thread([&] {
                    const int fd = ::open(target.c_str(), O_RDONLY);  // waits for the writer
                    if (fd >= 0) ::close(fd);
                });
            }
            try {
                if (npz) fstore::npy::write_npz(target, {{"a", array}});
                else fstore::npy::write_npy(target, array);
            } catch (...) {
                if (leaving_reader.joinable()) leaving_reader.join();
                throw;
            }
            if (leaving_reader.joinable()) leaving_reader.join();
        });
        EXPECT_EQ(outcome.exit_code, static_cast<int>(fstore::ExitCode::io)) << outcome.message;
        EXPECT_THAT(outcome.message, HasSubstr(device ? "No space left on device: free space or choose another --out"
                                                      : "Broken pipe"));
        struct stat after {};
        ASSERT_EQ(::lstat(target.c_str(), &after), 0);
        EXPECT_TRUE(device ? S_ISCHR(after.st_mode) : S_ISFIFO(after.st_mode)) << "the target was replaced";
    }
}

// A full disk (here: a file-size limit, in a child) is an I/O error naming the file, not a
// data error; the existing file keeps its bytes and no temporary file is left behind.
TEST(Npy, DiskFullIsAnIoErrorAndKeepsTheOldFile) {
    TempDir dir;
    const auto npy = dir.path() / "x.npy";
    const auto npz = dir.path() / "x.npz";
    std::ofstream(npy) << "old npy";
    std::ofstream(npz) << "old npz";
    const auto big = make_array(fstore::DType::f32, {64, 64});  // 16 KiB
    const auto npy_outcome = fstore::test::run_under_file_limit(4096, [&] { fstore::npy::write_npy(npy, big); });
    EXPECT_EQ(npy_outcome.exit_code, static_cast<int>(fstore::ExitCode::io));
    EXPECT_EQ(npy_outcome.message, "cannot write '" + npy.string() + "': File too large: free space or choose another --out");
    const auto npz_outcome =
        fstore::test::run_under_file_limit(4096, [&] { fstore::npy::write_npz(npz, {{"big", big}}); });
    EXPECT_EQ(npz_outcome.exit_code, static_cast<int>(fstore::ExitCode::io));
    EXPECT_EQ(npz_outcome.message, "cannot write '" + npz.string() + "': File too large: free space or choose another --out");
    EXPECT_EQ(read_file(npy), "old npy");
    EXPECT_EQ(read_file(npz), "old npz");
    EXPECT_THAT(partial_files(dir.path()), ::testing::IsEmpty());
}

// A directory the user may not write to is an I/O error that names the directory, in
// fstore's words for both writers (libzip's "Failure to create temporary file" used to leak
// through). Root writes anywhere, so the child drops to nobody first.
TEST(Npy, UnwritableDirectoryIsAnIoErrorNamingIt) {
    TempDir dir;
    const auto locked = dir.path() / "locked";
    fs::create_directory(locked);
    const auto read_and_search = fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                 fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec;
    fs::permissions(dir.path(), read_and_search | fs::perms::owner_write);
    fs::permissions(locked, read_and_search);
    const auto array = make_array(fstore::DType::f16, {2});
    for (const std::string name : {"x.npy", "x.npz"}) {
        const auto outcome = fstore::test::run_unprivileged([&] {
            if (name == "x.npy") fstore::npy::write_npy(locked / name, array);
            else fstore::npy::write_npz(locked / name, {{"a", array}});
        });
        EXPECT_EQ(outcome.exit_code, static_cast<int>(fstore::ExitCode::io)) << outcome.message;
        EXPECT_EQ(outcome.message, "cannot write '" + (locked / name).string() + "': directory '" + locked.string() +
                                       "' is not writable (Permission denied): choose another --out");
    }
}

// ---- queries on a reference store -----------------------------------------------------------

TEST(Query, BatchIndicesAreRelativeToTheSplit) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5", "--train 5 --val 3 --test 2");
    const auto store = fstore::FeatureStore::open(path);
    fstore::BatchRequest request;
    request.split = "val";
    request.feature = fstore::Feature::label;
    request.selection = fstore::parse_index_selection({"-1", "0"});
    const auto plan = fstore::plan_batch(store, request);
    EXPECT_EQ(plan.rows, (std::vector<std::int64_t>{7, 5}));  // val rows are 5, 6, 7
    EXPECT_EQ(plan.shape, (std::vector<std::int64_t>{2}));
    request.selection = fstore::parse_index_selection({"3"});
    try {
        fstore::plan_batch(store, request);
        FAIL() << "no exception";
    } catch (const fstore::UsageError& e) {
        EXPECT_THAT(e.what(), HasSubstr("-3..2"));
    }
    request.split = "holdout";
    EXPECT_THROW(fstore::plan_batch(store, request), fstore::UsageError);
    request.split = "test";
    request.feature = fstore::Feature::patches;
    request.selection = fstore::parse_index_selection({"::-1"});
    const auto patches = fstore::plan_batch(store, request);
    EXPECT_EQ(patches.rows, (std::vector<std::int64_t>{9, 8}));
    EXPECT_EQ(patches.shape, (std::vector<std::int64_t>{2, 4, 8}));
}

TEST(Query, FetchFiltersAndConceptList) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    const auto store = fstore::FeatureStore::open(path);
    fstore::FetchRequest request;
    request.concept_only = true;
    request.concept_list = {"Pale cytoplasm", "no such concept", "Segmented nucleus"};
    const auto result = fstore::fetch(store, request, true);
    ASSERT_EQ(result.templates.size(), 2u);
    EXPECT_EQ(result.templates[0].id, "concept_prompts_t01");
    EXPECT_EQ(result.templates[0].shape, (std::vector<std::int64_t>{2, 8}));
    EXPECT_EQ(result.unknown_concepts, std::vector<std::string>{"no such concept"});
    // Rows come in the order asked: "Pale cytoplasm" is concept 10, "Segmented nucleus" 0.
    const auto whole = store.read_template("concept_prompts_t01", false);
    const auto& picked = *result.templates[0].values;
    EXPECT_EQ(std::memcmp(picked.bytes.data(), whole.bytes.data() + 10 * 8 * 4, 8 * 4), 0);
    EXPECT_EQ(std::memcmp(picked.bytes.data() + 8 * 4, whole.bytes.data(), 8 * 4), 0);

    fstore::FetchRequest both;
    both.concept_only = both.label_only = true;
    EXPECT_THROW(fstore::fetch(store, both, false), fstore::UsageError);
    fstore::FetchRequest unknown;
    unknown.template_ids = {"nope"};
    EXPECT_THROW(fstore::fetch(store, unknown, false), fstore::UsageError);
    fstore::FetchRequest tokens;
    tokens.label_only = true;
    tokens.token_features = true;
    const auto label = fstore::fetch(store, tokens, false);
    ASSERT_EQ(label.templates.size(), 1u);
    EXPECT_EQ(label.templates[0].shape, (std::vector<std::int64_t>{8, 6, 8}));
}

// --concept-list on a selection without concept templates is refused, as with --label,
// instead of being ignored; next to a concept template it applies to that one.
TEST(Query, ConceptListNeedsAConceptTemplate) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    const auto store = fstore::FeatureStore::open(path);
    fstore::FetchRequest labels_only;
    labels_only.template_ids = {"label_prompts_t01"};
    labels_only.concept_list = {"Pale cytoplasm"};
    const auto refused = thrown_by([&] { fstore::fetch(store, labels_only, false); });
    EXPECT_EQ(refused.code, fstore::ExitCode::usage);
    EXPECT_EQ(refused.message,
              "--concept-list selects rows of concept templates, but the selection holds none (label_prompts_t01): "
              "drop --concept-list or select a concept template");

    fstore::FetchRequest mixed = labels_only;
    mixed.template_ids.push_back("concept_prompts_t02");
    const auto result = fstore::fetch(store, mixed, false);
    ASSERT_EQ(result.templates.size(), 2u);
    EXPECT_EQ(result.templates[0].shape, (std::vector<std::int64_t>{1, 8}));  // concept_prompts_t02, one row
    EXPECT_EQ(result.templates[1].shape, (std::vector<std::int64_t>{8, 8}));  // label_prompts_t01, whole

    fstore::FetchRequest option_as_value;
    option_as_value.template_ids = {"--json"};
    EXPECT_EQ(thrown_by([&] { fstore::fetch(store, option_as_value, false); }).message,
              "--template needs values (got option '--json')");
}

// summarize lists split counts in store order (first appearance in /split), not sorted by
// name, in its struct and its JSON; the attribute's own key order does not matter.
TEST(Query, SummarizeListsSplitsInStoreOrder) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5", "--train 5 --val 3 --test 2");
    run_python(dir, "import h5py, json\nwith h5py.File('" + path.string() + "', 'r+') as f:\n"
                    "    f.attrs['split_counts'] = json.dumps(json.loads(f.attrs['split_counts']), sort_keys=True)\n");
    const auto summary = fstore::summarize(path);
    const std::vector<std::pair<std::string, std::int64_t>> store_order = {{"train", 5}, {"val", 3}, {"test", 2}};
    EXPECT_EQ(summary.split_counts, store_order);
    std::vector<std::string> json_keys;
    const auto json = fstore::to_json(summary);
    for (const auto& item : json["split_counts"].items()) json_keys.push_back(item.key());
    EXPECT_EQ(json_keys, (std::vector<std::string>{"train", "val", "test"}));
    EXPECT_EQ(thrown_by([&] { fstore::summarize(path, -1); }).message, "--max-templates must be 0 or more");

    // Splits only the attribute names (here: all, /split is gone) keep the attribute's order.
    run_python(dir, "import h5py, json\nwith h5py.File('" + path.string() + "', 'r+') as f:\n"
                    "    del f['split']\n    f.attrs['split_counts'] = json.dumps({'val': 3, 'train': 5, 'test': 2})\n");
    const std::vector<std::pair<std::string, std::int64_t>> attribute_order = {{"val", 3}, {"train", 5}, {"test", 2}};
    EXPECT_EQ(fstore::summarize(path).split_counts, attribute_order);
}

// ---- verify ---------------------------------------------------------------------------------

TEST(Verify, CleanReferenceStoreHasNoFindings) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    const auto report = fstore::verify(path);
    EXPECT_TRUE(report.ok()) << nlohmann::json(report.findings).dump();
    EXPECT_EQ(report.rows, 10);
    EXPECT_GE(report.checks.size(), 5u);
}

TEST(Verify, ReportsEachBreakage) {
    TempDir dir;
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"lengths", "different lengths"},   {"ids", "ids are not 0..N-1"},
        {"split_counts", "split_counts"},   {"template_k", "attribute K=16"},
        {"template_t", "attribute T_txt=8"}, {"texts_hash", "texts_hash"},
        {"torn_tail", "are incomplete"},       {"split_bytes", "differs from the counts"},
        {"templates_dataset", "/templates is not a group"},
        {"stale_template", "template 'concept_prompts_t02' is not one of the prompt set's"},
        {"stale_concepts", "template 'concept_prompts_t01' holds other texts than the store's prompt attributes"},
    };
    // One Python run writes a good store and a broken copy per kind.
    run_python(dir, "import shutil\nfrom fstore_ref import store\nd = '" + dir.path().string() +
                        "'\nstore.write_reference_store(d + '/good.h5')\nfor kind in store.BREAKAGES:\n"
                        "    shutil.copyfile(d + '/good.h5', d + '/' + kind + '.h5')\n"
                        "    store.break_store(d + '/' + kind + '.h5', kind)\n");
    for (const auto& [kind, expected] : cases) {
        const auto path = dir.path() / (kind + ".h5");
        const auto before = read_file(path);
        const auto report = fstore::verify(path);
        EXPECT_FALSE(report.ok()) << kind;
        const auto all = nlohmann::json(report.findings).dump();
        EXPECT_THAT(all, HasSubstr(expected)) << kind;
        EXPECT_EQ(read_file(path), before) << "verify changed " << kind;
    }
}

// A feature chunk that no longer decompresses passes the structural checks; --data reads
// every row and names the damaged ones (and nothing else).
TEST(Verify, DataReadFindsADamagedChunk) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5", "--train 9 --val 0 --test 0");
    damage_chunk(dir, path, "image_token_features", 1, "    f['image_token_features'][4:8] = 0\n");
    EXPECT_TRUE(fstore::verify(path).ok());
    const auto report = fstore::verify(path, true);
    ASSERT_EQ(report.findings.size(), 1u) << nlohmann::json(report.findings).dump();
    EXPECT_THAT(report.findings[0], HasSubstr("cannot read rows 4..7 of /image_token_features"));
    EXPECT_THAT(report.findings[0], HasSubstr("restore it from a copy"));
    EXPECT_THAT(nlohmann::json(report.checks).dump(), HasSubstr("every feature and label row can be read"));
    EXPECT_TRUE(fstore::verify(write_reference_store(dir, "clean.h5"), true).ok());
}

TEST(Verify, NonStoresThrow) {
    TempDir dir;
    EXPECT_THROW(fstore::verify(dir.path() / "missing.h5"), fstore::NotFoundError);
    EXPECT_THROW(fstore::verify(dir.path()), fstore::NotFoundError);
    std::ofstream(dir.path() / "text.h5") << "not hdf5\n";
    EXPECT_THROW(fstore::verify(dir.path() / "text.h5"), fstore::FormatError);
    run_python(dir, "import h5py\nh5py.File('" + (dir.path() / "other.h5").string() + "', 'w').create_dataset('x', data=[1])\n");
    EXPECT_THROW(fstore::verify(dir.path() / "other.h5"), fstore::FormatError);
}

// A damaged template group whose two feature datasets disagree on K: fetch reports the shape
// of the dataset it reads (as h5py does), the same with and without the data, and a concept
// row past that dataset's end is the store's inconsistency, not an internal error.
TEST(Query, FetchShapesComeFromTheDatasetRead) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    run_python(dir, "import h5py, numpy as np\n"
                    "with h5py.File('" + path.string() + "', 'a') as f:\n"
                    "    g = f['templates/concept_prompts_t01']\n"
                    "    t = g['text_token_features'][:3]\n"
                    "    del g['text_token_features']\n"
                    "    g['text_token_features'] = t\n"
                    "    print(t.shape[1])\n");
    const auto store = fstore::FeatureStore::open(path);
    fstore::FetchRequest tokens;
    tokens.template_ids = {"concept_prompts_t01"};
    tokens.token_features = true;
    const auto shape_only = fstore::fetch(store, tokens, false);
    const auto with_data = fstore::fetch(store, tokens, true);
    ASSERT_EQ(shape_only.templates.size(), 1u);
    EXPECT_EQ(shape_only.templates[0].shape.at(0), 3);
    EXPECT_EQ(shape_only.templates[0].shape, with_data.templates[0].shape);

    tokens.concept_list = {"Segmented nucleus", "Pale cytoplasm"};  // concepts 0 and 10
    const auto past_the_end = thrown_by([&] { fstore::fetch(store, tokens, true); });
    EXPECT_EQ(past_the_end.code, fstore::ExitCode::data) << past_the_end.message;
    EXPECT_THAT(past_the_end.message, HasSubstr("has 3 rows but concept_texts lists more concepts"));
}

// A template dataspace claiming far more than the file holds (a flipped byte) is refused as
// damage (exit 4) before anything is allocated, not an out-of-memory internal error.
TEST(Query, ImplausiblyLargeTemplateIsDamageNotOutOfMemory) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    run_python(dir, "import h5py\n"
                    "with h5py.File('" + path.string() + "', 'a') as f:\n"
                    "    g = f['templates/concept_prompts_t01']\n"
                    "    del g['text_features']\n"
                    "    g.create_dataset('text_features', shape=(2**45, 8), dtype='f4', chunks=(1024, 8))\n");
    const auto store = fstore::FeatureStore::open(path);
    const auto thrown = thrown_by([&] { store.read_template("concept_prompts_t01", false); });
    EXPECT_EQ(thrown.code, fstore::ExitCode::bad_format) << thrown.message;
    EXPECT_THAT(thrown.message, HasSubstr("is damaged"));
    EXPECT_THAT(thrown.message, HasSubstr("35184372088832, 8"));
    EXPECT_THAT(thrown.message, HasSubstr("clear-templates"));
}

// A /split chunk that fails to decompress is named like a damaged row chunk: the store, the
// rows, the dataset and what to do.
TEST(Query, DamagedSplitChunkNamesTheRowsAndTheFix) {
    TempDir dir;
    const auto path = write_reference_store(dir, "ref.h5");
    damage_chunk(dir, path, "split", 0);
    const auto thrown = thrown_by([&] { fstore::FeatureStore::open(path).read_all_splits(); });
    EXPECT_EQ(thrown.code, fstore::ExitCode::bad_format) << thrown.message;
    EXPECT_THAT(thrown.message, HasSubstr("cannot read rows 0..9 of /split (filter returned failure"));
    EXPECT_THAT(thrown.message, HasSubstr("restore it from a copy"));
}
