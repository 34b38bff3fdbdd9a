// run_build and its helpers as a library: option validation, the resume hint, the stop
// flag, and resume from the rows on disk (through FeatureStore, not the CLI).
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"
#include "fstore/pipeline.hpp"

namespace fs = std::filesystem;

namespace {

fstore::BuildOptions valid() {
    fstore::BuildOptions o;
    o.size = 28;
    return o;
}

// A scratch directory with a generated BloodMNIST-format npz (train 5, val 2, test 3).
struct Fixture {
    fs::path dir;
    Fixture() {
        dir = fs::temp_directory_path() / ("fstore-pipeline-api-" + std::to_string(::getpid()) + "-" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir);
        fs::create_directories(dir);
        // Quoted: the source tree or TMPDIR may have spaces in its path.
        const std::string cmd = std::string("'") + FSTORE_PYTHON + "' '" + FSTORE_SOURCE_DIR +
                                "/tests/python/fstore_ref/medmnist.py' --out '" + (dir / "data").string() +
                                "' --size 28 --train 5 --val 2 --test 3 --seed 4 > /dev/null";
        if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot generate test data: " + cmd);
    }
    ~Fixture() { fs::remove_all(dir); }
    fstore::BuildOptions options() const {
        fstore::BuildOptions o = valid();
        o.model_path = fs::path(FSTORE_SOURCE_DIR) / "models" / "tiny.pt";
        o.h5_path = dir / "store.h5";
        o.data_root = dir / "data";
        o.batch_size = 2;
        o.threads = 1;
        return o;
    }
};

}  // namespace

TEST(BuildOptions, ValidationNamesTheFlag) {
    EXPECT_NO_THROW(fstore::validate_options(valid()));
    auto expect_usage = [](fstore::BuildOptions o, const std::string& needle) {
        try {
            fstore::validate_options(o);
            ADD_FAILURE() << "no error for " << needle;
        } catch (const fstore::UsageError& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    auto o = valid();
    o.batch_size = 0;
    expect_usage(o, "--batch-size");
    o = valid();
    o.size = 100;
    expect_usage(o, "--size 100");
    o = valid();
    o.splits = {"train", "train"};
    expect_usage(o, "twice");
    o = valid();
    o.splits = {"train", "", "val"};  // "--splits train,,val"
    expect_usage(o, "empty name");
    o = valid();
    o.images_dir = "imgs";
    expect_usage(o, "--labels");
    o = valid();
    o.run_text = o.run_image = false;
    expect_usage(o, "nothing to do");
    o = valid();
    o.precision = "fp8";
    expect_usage(o, "--precision");
    // A folder dataset may name any split; MedMNIST only train/val/test.
    o = valid();
    o.splits = {"holdout"};
    expect_usage(o, "holdout");
    o.images_dir = "imgs";
    o.labels_csv = "labels.csv";
    EXPECT_NO_THROW(fstore::validate_options(o));
}

TEST(BuildOptions, ResumeHintRepeatsTheCommandWithoutNoResume) {
    EXPECT_EQ(fstore::resume_hint({"fstore", "build", "--no-resume", "--h5", "my store.h5", "--limit", "5"}),
              "fstore build --h5 'my store.h5' --limit 5");
    EXPECT_EQ(fstore::resume_hint({"fstore", "build", "--prompts", "it's.json"}),
              "fstore build --prompts 'it'\\''s.json'");
}

TEST(RunBuild, StopFlagSetBeforehandWritesNothingAndResumes) {
    Fixture fx;
    const auto o = fx.options();
    std::atomic<bool> stop{true};
    auto summary = fstore::run_build(o, &stop);
    EXPECT_TRUE(summary.interrupted);
    EXPECT_EQ(summary.total_new, 0);
    EXPECT_EQ(summary.total_rows, -1);  // no store was opened
    EXPECT_TRUE(summary.to_json()["total_rows"].is_null());
    EXPECT_TRUE(summary.templates.empty());
    EXPECT_FALSE(fs::exists(o.h5_path)) << "a stop before the work began created the store";

    stop = false;
    summary = fstore::run_build(o, &stop);
    EXPECT_FALSE(summary.interrupted);
    EXPECT_EQ(summary.total_new, 10);
    EXPECT_EQ(summary.templates.size(), 12u);
    const auto json = summary.to_json();
    EXPECT_EQ(json["total_rows"], 10);
    EXPECT_EQ(json["splits"][1]["split"], "val");
    EXPECT_EQ(json["splits"][1]["appended"], 2);
    EXPECT_NE(summary.to_text().find("Total new samples: 10 (store holds 10 rows)"), std::string::npos)
        << summary.to_text();

    // Rows already on disk are skipped per split; --limit below them adds nothing.
    auto limited = o;
    limited.limit = 1;
    limited.run_text = false;
    summary = fstore::run_build(limited);
    EXPECT_EQ(summary.total_new, 0);
    ASSERT_EQ(summary.splits.size(), 3u);
    EXPECT_EQ(summary.splits[0].resumed, 5);
    EXPECT_EQ(summary.splits[2].resumed, 3);

    auto store = fstore::FeatureStore::open(o.h5_path);
    const std::map<std::string, std::int64_t> expected{{"train", 5}, {"val", 2}, {"test", 3}};
    EXPECT_EQ(store.split_counts_from_data(), expected);
    EXPECT_EQ(store.split_counts(), expected);
}

TEST(RunBuild, LimitThenRestAppendsOnlyWhatIsMissing) {
    Fixture fx;
    auto o = fx.options();
    o.run_text = false;
    o.limit = 1;
    auto summary = fstore::run_build(o);
    EXPECT_EQ(summary.total_new, 3);
    o.limit = -1;
    summary = fstore::run_build(o);
    EXPECT_EQ(summary.total_new, 7);
    EXPECT_EQ(summary.splits[0].resumed, 1);
    EXPECT_EQ(summary.splits[0].appended, 4);
    auto store = fstore::FeatureStore::open(o.h5_path);
    EXPECT_EQ(store.rows(), 10);
    const auto ids = store.read_rows(fstore::Column::ids, {0, 3, 9});
    EXPECT_EQ(ids.data<std::int64_t>()[0], 0);
    EXPECT_EQ(ids.data<std::int64_t>()[1], 3);
    EXPECT_EQ(ids.data<std::int64_t>()[2], 9);
    EXPECT_TRUE(store.template_ids().empty());  // image stage only
}

TEST(RunBuild, MissingDataSaysHowToGetIt) {
    Fixture fx;
    auto o = fx.options();
    o.data_root = fx.dir / "nowhere";
    o.run_text = false;
    try {
        fstore::run_build(o);
        FAIL() << "no error";
    } catch (const fstore::NotFoundError& e) {
        EXPECT_NE(std::string(e.what()).find("--download"), std::string::npos) << e.what();
    }
}

// --durable changes only how commits reach the disk (fdatasync of journal and file), never
// what is stored: the store equals a plain build's and no journal is left behind.
TEST(RunBuild, DurableBuildStoresTheSameRows) {
    Fixture fx;
    auto o = fx.options();
    o.run_text = false;
    fstore::run_build(o);
    o.h5_path = fx.dir / "durable.h5";
    o.durable = true;
    const auto summary = fstore::run_build(o);
    EXPECT_EQ(summary.total_new, 10);
    EXPECT_FALSE(fs::exists(fx.dir / "durable.h5.journal"));
    const auto plain = fstore::FeatureStore::open(fx.dir / "store.h5");
    const auto durable = fstore::FeatureStore::open(o.h5_path);
    std::vector<std::int64_t> all(10);
    for (std::int64_t i = 0; i < 10; ++i) all[static_cast<std::size_t>(i)] = i;
    EXPECT_EQ(plain.read_rows(fstore::Column::image_token_features, all).bytes,
              durable.read_rows(fstore::Column::image_token_features, all).bytes);
    EXPECT_EQ(plain.read_splits(all), durable.read_splits(all));
}

// Ctrl-C before the work began (during the model load): the store is left exactly as it was,
// also under --no-resume, which would discard every image row.
TEST(RunBuild, StopBeforeTheWorkLeavesTheStoreAsItWasEvenWithNoResume) {
    Fixture fx;
    auto o = fx.options();
    const auto built = fstore::run_build(o);
    ASSERT_EQ(built.total_rows, 10);
    const auto read_bytes = [&] {
        std::ifstream in(o.h5_path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    const std::string before = read_bytes();

    o.resume = false;
    std::atomic<bool> stop{true};
    const auto summary = fstore::run_build(o, &stop);
    EXPECT_TRUE(summary.interrupted);
    EXPECT_EQ(summary.total_new, 0);
    EXPECT_EQ(read_bytes(), before) << "the interrupted --no-resume run changed the store";
    // Not "0 rows": the store was never opened, its 10 rows are there.
    EXPECT_TRUE(summary.to_json()["total_rows"].is_null());
    auto store = fstore::FeatureStore::open(o.h5_path);
    EXPECT_EQ(store.rows(), 10);
}

// A stop while the last batch is being encoded ends a finished run, not an interrupted one:
// that batch is committed and nothing is left to resume. (step_delay holds the only batch in
// the encoder for 6 s; the stop comes 3 s in, the tiny model loads in well under that.)
TEST(RunBuild, StopDuringTheLastBatchIsNoInterruption) {
    Fixture fx;
    auto o = fx.options();
    o.run_text = false;
    o.splits = {"test"};
    o.batch_size = 8;  // the split's 3 samples: one batch
    o.step_delay = std::chrono::milliseconds(6000);
    std::atomic<bool> stop{false};
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::seconds(3));
        stop = true;
    });
    const auto summary = fstore::run_build(o, &stop);
    stopper.join();
    EXPECT_FALSE(summary.interrupted);
    EXPECT_EQ(summary.total_new, 3);
    EXPECT_EQ(fstore::FeatureStore::open(o.h5_path).rows(), 3);
}
