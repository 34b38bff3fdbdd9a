// The MedMNIST .npz reader against numpy's reading of the same files (make_npz_cases.py).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/stat.h>

#include "fstore/datasets.hpp"
#include "fstore/error.hpp"
#include "test_util.hpp"

namespace fstore {
namespace {

using test::read_raw;

class NpzTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = test::cached_cases("npz", "tests/image/make_npz_cases.py", {"tests/python/fstore_ref/medmnist.py"});
    }
    static std::string file(const std::string& name) { return dir_ + "/" + name; }
    static std::vector<std::string> lines(const std::string& name) {
        std::ifstream in(file(name));
        std::vector<std::string> out;
        for (std::string l; std::getline(in, l);) {
            if (!l.empty()) out.push_back(l);
        }
        return out;
    }
    // Reads everything (batches of `batch`) and compares with numpy's dump.
    static void expect_same_as_numpy(const std::string& stem, std::size_t batch, std::int64_t skip_first = 0) {
        SCOPED_TRACE(stem + " batch " + std::to_string(batch) + " skip " + std::to_string(skip_first));
        auto src = open_npz(file(stem + ".npz"));
        std::int64_t total = 0;
        for (const auto& split : src->splits()) {
            const auto labels = read_raw<std::int64_t>(file(stem + "." + split.name + ".labels"));
            const auto images = read_raw<std::uint8_t>(file(stem + "." + split.name + ".images"));
            ASSERT_EQ(split.size, static_cast<std::int64_t>(labels.size())) << split.name;
            total += split.size;
        }
        EXPECT_EQ(src->size(), total);
        std::vector<Sample> out;
        while (!src->current_split().empty()) {
            const std::string split = src->current_split();
            const auto labels = read_raw<std::int64_t>(file(stem + "." + split + ".labels"));
            const auto images = read_raw<std::uint8_t>(file(stem + "." + split + ".images"));
            const std::size_t per = labels.empty() ? 0 : images.size() / labels.size();
            ASSERT_EQ(src->position_in_split(), 0);
            const std::int64_t skipped = src->skip(skip_first);
            EXPECT_EQ(skipped, std::min<std::int64_t>(skip_first, static_cast<std::int64_t>(labels.size())));
            std::size_t i = static_cast<std::size_t>(skipped);
            while (src->current_split() == split) {
                const std::size_t n = src->next_batch(batch, out);
                ASSERT_GT(n, 0u);
                ASSERT_EQ(out.size(), n);
                for (const auto& s : out) {
                    ASSERT_LT(i, labels.size());
                    EXPECT_EQ(s.split, split);
                    EXPECT_EQ(s.label, labels[i]) << "sample " << i;
                    ASSERT_EQ(s.pixels.size(), per);
                    ASSERT_EQ(static_cast<std::size_t>(s.height) * s.width * s.channels, per);
                    EXPECT_TRUE(std::equal(s.pixels.begin(), s.pixels.end(), images.begin() + i * per))
                        << split << " sample " << i;
                    ++i;
                }
            }
            EXPECT_EQ(i, labels.size()) << split;
        }
        EXPECT_EQ(src->next_batch(batch, out), 0u);
        EXPECT_TRUE(out.empty());
        EXPECT_EQ(src->position(), total);
    }
    static std::string dir_;
};
std::string NpzTest::dir_;

TEST_F(NpzTest, ReadsTheSamePixelsAndLabelsAsNumpy) {
    const auto stems = lines("good.txt");
    ASSERT_GE(stems.size(), 7u);
    for (const auto& stem : stems) {
        expect_same_as_numpy(stem, 4);
        expect_same_as_numpy(stem, 1000);
    }
}

TEST_F(NpzTest, SkipResumesMidSplitInStoredAndDeflatedMembers) {
    for (const auto& stem : lines("good.txt")) {
        expect_same_as_numpy(stem, 2, 2);
        expect_same_as_numpy(stem, 3, 100);  // skip stops at the end of each split
    }
}

// skip_entries past the end of a split moves to the next split without reading the rest
// (what `fstore build --limit` does); the next split reads exactly as numpy has it.
TEST_F(NpzTest, SkipEntriesDropsTheRestOfASplitUnread) {
    int checked = 0;
    for (const auto& stem : lines("good.txt")) {
        SCOPED_TRACE(stem);
        auto src = open_npz(file(stem + ".npz"));
        if (src->splits().size() < 2 || src->splits()[0].size < 2 || src->splits()[1].size == 0) continue;
        ++checked;
        const auto first = src->splits()[0];
        std::vector<Sample> out;
        ASSERT_EQ(src->next_batch(1, out), 1u);
        EXPECT_EQ(src->skip_entries(first.size + 100), first.size - 1);
        EXPECT_EQ(src->position(), first.size);
        EXPECT_EQ(src->current_split(), src->splits()[1].name);
        const auto labels = read_raw<std::int64_t>(file(stem + "." + src->splits()[1].name + ".labels"));
        ASSERT_EQ(src->next_batch(1, out), 1u);
        EXPECT_EQ(out[0].label, labels[0]);
    }
    EXPECT_GT(checked, 0) << "no test file has two non-empty splits";
}

// Ctrl-C: with the stop flag set, reads and skips return 0 and consume nothing; the source
// goes on from the same sample if the flag is cleared (the pipeline never does, but it shows
// that nothing was lost or half-read).
TEST_F(NpzTest, StopFlagMakesReadsReturnNothing) {
    int checked = 0;
    for (const auto& stem : lines("good.txt")) {
        SCOPED_TRACE(stem);
        std::atomic<bool> stop{false};
        auto src = open_npz(file(stem + ".npz"), default_splits(), &stop);
        if (src->splits().empty() || src->splits()[0].size < 3) continue;
        ++checked;
        const std::string split = src->splits()[0].name;
        const auto labels = read_raw<std::int64_t>(file(stem + "." + split + ".labels"));
        std::vector<Sample> out;
        ASSERT_EQ(src->next_batch(1, out), 1u);
        stop = true;
        EXPECT_EQ(src->next_batch(2, out), 0u);
        EXPECT_TRUE(out.empty());
        EXPECT_EQ(src->skip(1), 0);
        EXPECT_EQ(src->position(), 1);
        EXPECT_EQ(src->current_split(), split);
        stop = false;
        ASSERT_EQ(src->next_batch(1, out), 1u);
        EXPECT_EQ(out[0].label, labels[1]);
    }
    EXPECT_GT(checked, 0) << "no test file has a split of 3 samples";
    // Set before the first read: the first member's check is not waited for.
    std::atomic<bool> stop{true};
    auto src = open_npz(file(lines("good.txt").front() + ".npz"), default_splits(), &stop);
    std::vector<Sample> out;
    EXPECT_EQ(src->next_batch(4, out), 0u);
    EXPECT_EQ(src->position(), 0);
}

TEST_F(NpzTest, ShapesAndSplitOrder) {
    auto src = open_npz(file("gray.npz"), {"test", "train"});
    ASSERT_EQ(src->splits().size(), 2u);
    EXPECT_EQ(src->splits()[0].name, "test");
    EXPECT_EQ(src->splits()[0].size, 5);
    EXPECT_EQ(src->splits()[1].name, "train");
    EXPECT_EQ(src->current_split(), "test");
    std::vector<Sample> out;
    ASSERT_EQ(src->next_batch(100, out), 5u);  // batches never span splits
    EXPECT_EQ(out[0].channels, 1);
    EXPECT_EQ(out[0].height, 16);
    EXPECT_EQ(src->current_split(), "train");

    auto odd = open_npz(file("odd.npz"));
    ASSERT_EQ(odd->next_batch(1, out), 1u);
    EXPECT_EQ(out[0].height, 12);
    EXPECT_EQ(out[0].width, 20);
    EXPECT_EQ(out[0].channels, 3);

    auto empty = open_npz(file("empty_val.npz"));
    EXPECT_EQ(empty->splits()[1].size, 0);
    EXPECT_EQ(empty->next_batch(10, out), 4u);
    EXPECT_EQ(empty->current_split(), "test");  // the empty split is passed over
}

TEST_F(NpzTest, FingerprintFollowsContentNotPackingOrOrder) {
    const std::string savez = open_npz(file("mode_savez.npz"))->fingerprint();
    EXPECT_EQ(savez.size(), 64u) << savez;
    EXPECT_EQ(savez.find_first_not_of("0123456789abcdef"), std::string::npos) << savez;
    // Same members, deflated and in reverse order: same content, same fingerprint; it does
    // not depend on the splits a run asks for either.
    EXPECT_EQ(open_npz(file("reordered.npz"))->fingerprint(), savez);
    EXPECT_EQ(open_npz(file("mode_savez.npz"), {"test"})->fingerprint(), savez);
    // One pixel differs, or other data altogether: another fingerprint.
    EXPECT_NE(open_npz(file("one_pixel.npz"))->fingerprint(), savez);
    EXPECT_NE(open_npz(file("mode_savez_compressed.npz"))->fingerprint(), savez);
}

TEST_F(NpzTest, MedmnistNamingAndMissingFile) {
    EXPECT_EQ(medmnist_file_name("bloodmnist", 28), "bloodmnist.npz");
    EXPECT_EQ(medmnist_file_name("bloodmnist", 224), "bloodmnist_224.npz");
    test::TempDir root;
    try {
        open_medmnist({"bloodmnist", 64, root.path().string(), default_splits()});
        FAIL() << "no exception";
    } catch (const NotFoundError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("bloodmnist_64.npz"), std::string::npos) << msg;
        EXPECT_NE(msg.find("--download"), std::string::npos) << msg;
        EXPECT_NE(msg.find("--data-root"), std::string::npos) << msg;
    }
    std::filesystem::copy_file(file("mode_savez.npz"), root / "bloodmnist.npz");
    auto src = open_medmnist({"bloodmnist", 28, root.path().string(), {"val"}});
    EXPECT_EQ(src->size(), 3);
    // A file named for size 64 that holds 28x28 images is refused before any row is read.
    std::filesystem::copy_file(file("mode_savez.npz"), root / "bloodmnist_64.npz");
    try {
        open_medmnist({"bloodmnist", 64, root.path().string(), default_splits()});
        FAIL() << "no exception";
    } catch (const DataError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("28x28 images, not 64x64"), std::string::npos) << msg;
        EXPECT_NE(msg.find("--size"), std::string::npos) << msg;
    }
    EXPECT_EQ(open_npz(root / "bloodmnist_64.npz")->size(), 15);  // an explicit path takes any size
    // A directory or FIFO in the file's place: named as such (a FIFO is not opened: no hang).
    std::filesystem::create_directory(root / "bloodmnist_128.npz");
    ASSERT_EQ(::mkfifo((root / "bloodmnist_224.npz").c_str(), 0600), 0);
    for (const auto& [size, what] : {std::pair{128, "is a directory"}, std::pair{224, "not a regular file"}}) {
        try {
            open_medmnist({"bloodmnist", size, root.path().string(), default_splits()});
            ADD_FAILURE() << "no exception for size " << size;
        } catch (const NotFoundError& e) {
            EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
        }
    }
}

TEST_F(NpzTest, BadFilesGiveTheDocumentedErrors) {
    const auto cases = lines("bad.txt");
    ASSERT_EQ(cases.size(), 18u);
    for (const auto& line : cases) {
        std::istringstream in(line);
        std::string name, kind, early;
        in >> name >> kind >> early;
        SCOPED_TRACE(name);
        std::size_t handed_out = 0;
        try {
            auto src = open_npz(file(name));
            std::vector<Sample> out;
            while (src->next_batch(1, out) > 0) ++handed_out;
            ADD_FAILURE() << "no exception";
        } catch (const FormatError& e) {
            // "early": refused before any sample of the file is handed out (and committed).
            if (early == "early") EXPECT_EQ(handed_out, 0u) << e.what();
            EXPECT_EQ(kind, "format") << e.what();
            EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << "message names the file: " << e.what();
        } catch (const DataError& e) {
            EXPECT_EQ(kind, "data") << e.what();
            if (name == "missing_val.npz") {
                const std::string msg = e.what();
                EXPECT_NE(msg.find("val_images.npy"), std::string::npos) << msg;
                EXPECT_NE(msg.find("train_labels.npy"), std::string::npos) << "lists the members: " << msg;
            }
        }
    }
}

TEST_F(NpzTest, TruncatedAndCorruptFilesAreFormatErrors) {
    test::TempDir tmp;
    const std::string truncated = tmp / "truncated.npz";
    std::filesystem::copy_file(file("mode_savez_compressed.npz"), truncated);
    std::filesystem::resize_file(truncated, std::filesystem::file_size(truncated) * 2 / 3);
    EXPECT_THROW(open_npz(truncated), FormatError);

    for (const auto& line : lines("corrupt.txt")) {
        std::istringstream in(line);
        std::string stem;
        std::size_t offset;
        in >> stem >> offset;
        SCOPED_TRACE(stem);
        const std::string path = tmp / (stem + ".npz");
        auto bytes = test::read_bytes(file(stem + ".npz"));
        for (std::size_t k = 0; k < 16; ++k) bytes[offset + k] ^= 0x5A;
        test::write_bytes(path, bytes);
        // Found before the first sample is handed out (so no row from the member is ever
        // committed), and also when a resume skips past the bad bytes.
        std::vector<Sample> out;
        EXPECT_THROW(open_npz(path)->next_batch(1, out), FormatError);
        EXPECT_THROW(open_npz(path)->skip(1), FormatError);
        auto src = open_npz(path, {"val"});
        EXPECT_GT(src->next_batch(1, out), 0u) << "the other members are intact";
    }
}

long rss_kb() {
    std::ifstream in("/proc/self/status");
    for (std::string l; std::getline(in, l);) {
        if (l.rfind("VmRSS:", 0) == 0) return std::stol(l.substr(6));
    }
    return -1;
}

TEST_F(NpzTest, StreamsA200MBMemberWithSmallMemory) {
    auto src = open_npz(file("big.npz"), {"train"});
    ASSERT_EQ(src->size(), 1400);
    std::vector<Sample> out;
    const long before = rss_kb();
    long peak = before;
    std::int64_t i = 0;
    while (src->next_batch(16, out) > 0) {
        for (const auto& s : out) {
            ASSERT_EQ(s.pixels.size(), 224u * 224u * 3u);
            ASSERT_EQ(s.pixels[0], i % 251) << "sample " << i;
            ASSERT_EQ(s.label, i % 8);
            ++i;
        }
        peak = std::max(peak, rss_kb());
    }
    EXPECT_EQ(i, 1400);
    // A batch is 2.4 MB; the member is 210 MB.
    EXPECT_LT(peak - before, 40 * 1024) << "RSS grew by " << (peak - before) << " kB";
}

}  // namespace
}  // namespace fstore
