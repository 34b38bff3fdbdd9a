// FeatureStore API tests on small stores (D=8, T_img=5).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fstore/error.hpp"
#include "fstore/feature_store.hpp"
#include "fstore/h5.hpp"
#include "fstore/journal.hpp"
#include "fstore/half.hpp"
#include "fstore/lzf_filter.hpp"
#include "../common/child_process.hpp"

namespace fs = std::filesystem;
using fstore::Column;
using fstore::FeatureStore;
using fstore::test::exit_code_under_file_limit;
using ::testing::HasSubstr;

namespace {

constexpr std::int64_t D = 8;
constexpr std::int64_t T = 5;

// Rows with values derived from the row number, so any row can be checked on its own.
struct Rows {
    std::vector<std::uint16_t> cls, tokens;
    std::vector<std::int64_t> labels;
    std::vector<std::string> splits;
    fstore::RowBatch batch() const {
        fstore::RowBatch b;
        b.rows = static_cast<std::int64_t>(labels.size());
        b.image_features = cls.data();
        b.image_token_features = tokens.data();
        b.labels = labels.data();
        b.splits = &splits;
        return b;
    }
};

float cls_value(std::int64_t row, std::int64_t d) { return static_cast<float>(row) + 0.125f * static_cast<float>(d); }
float token_value(std::int64_t row, std::int64_t t, std::int64_t d) {
    return static_cast<float>(row) * 0.5f - static_cast<float>(t) + 0.25f * static_cast<float>(d);
}

Rows make_rows(std::int64_t first, std::int64_t count, const std::string& split) {
    Rows r;
    for (std::int64_t i = first; i < first + count; ++i) {
        for (std::int64_t d = 0; d < D; ++d) r.cls.push_back(fstore::float_to_half(cls_value(i, d)));
        for (std::int64_t t = 0; t < T; ++t)
            for (std::int64_t d = 0; d < D; ++d)
                r.tokens.push_back(fstore::float_to_half(token_value(i, t, d)));
        r.labels.push_back(i % 3);
        r.splits.push_back(split);
    }
    return r;
}

class StoreTest : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() /
               ("fstore_store_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
        fs::remove_all(dir_);
        fs::create_directories(dir_);
        path_ = dir_ / "store.h5";
    }
    void TearDown() override { fs::remove_all(dir_); }

    FeatureStore make_store(std::int64_t train, std::int64_t val) {
        auto store = FeatureStore::open_or_create(path_, {D, T});
        if (train > 0) store.append_batch(make_rows(0, train, "train").batch());
        if (val > 0) store.append_batch(make_rows(train, val, "val").batch());
        return store;
    }

    // Raw HDF5 access, to damage a store the way a killed writer or another tool would.
    fstore::h5::File raw_open() {
        fstore::h5::init();
        return fstore::h5::File(H5Fopen(path_.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), "raw open");
    }

    fs::path dir_, path_;
};

void expect_cls_row(const fstore::Array& a, std::size_t i, std::int64_t row) {
    for (std::int64_t d = 0; d < D; ++d)
        EXPECT_EQ(fstore::half_to_float(a.data<std::uint16_t>()[i * D + static_cast<std::size_t>(d)]),
                  cls_value(row, d))
            << "output " << i << " (row " << row << ") d=" << d;
}

TEST_F(StoreTest, CreatesEmptyStoreWithReferenceSchema) {
    {
        auto store = FeatureStore::open_or_create(path_, {D, T});
        EXPECT_TRUE(store.writable());
        EXPECT_EQ(store.rows(), 0);
        EXPECT_EQ(store.layout().dim, D);
        EXPECT_EQ(store.layout().image_tokens, T);
        EXPECT_TRUE(store.template_ids().empty());
    }
    auto store = FeatureStore::open(path_);
    EXPECT_FALSE(store.writable());
    const auto attrs = store.attributes();
    EXPECT_EQ(std::get<std::int64_t>(attrs.at("D")), D);
    EXPECT_EQ(std::get<std::int64_t>(attrs.at("T_img")), T);
    EXPECT_EQ(std::get<std::string>(attrs.at("version")), "1.0");
    EXPECT_EQ(std::get<std::string>(attrs.at("split_counts")), "{}");
    const auto created = std::get<std::string>(attrs.at("created_at"));
    EXPECT_EQ(created.size(), 19u) << created;  // YYYY-MM-DD HH:MM:SS
    EXPECT_EQ(created[4], '-');
    EXPECT_EQ(created[13], ':');

    // Chunk shapes and the lzf filter, straight from HDF5.
    fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
    const std::vector<std::pair<const char*, std::vector<hsize_t>>> expected = {
        {"image_features", {64, D}}, {"image_token_features", {4, T, D}},
        {"ids", {4096}}, {"labels", {4096}}, {"split", {4096}}};
    for (const auto& [name, chunks] : expected) {
        auto dset = fstore::h5::open_dataset(f, name);
        EXPECT_EQ(fstore::h5::chunk_dims(dset), chunks) << name;
        fstore::h5::PropList dcpl(H5Dget_create_plist(dset), "dcpl");
        unsigned flags = 0, cd[8];
        std::size_t n = 8;
        ASSERT_GE(H5Pget_filter_by_id2(dcpl, fstore::lzf::filter_id, &flags, &n, cd, 0, nullptr, nullptr), 0) << name;
        EXPECT_TRUE(flags & H5Z_FLAG_OPTIONAL);
        // HDF5 does not call set_local for vlen types: h5py's split dataset has no client
        // data either.
        if (std::string(name) == "split") continue;
        EXPECT_EQ(n, 3u);
        EXPECT_EQ(cd[0], 4u);
        EXPECT_EQ(cd[1], 261u);
        fstore::h5::Datatype type(H5Dget_type(dset), "type");
        hsize_t bytes = H5Tget_size(type);  // vlen strings: 16-byte descriptors, as h5py gets
        for (hsize_t c : chunks) bytes *= c;
        EXPECT_EQ(cd[2], bytes) << name;
    }
    auto feats = fstore::h5::open_dataset(f, "image_features");
    fstore::h5::Datatype type(H5Dget_type(feats), "type");
    EXPECT_TRUE(fstore::h5::is_half(type));
}

TEST_F(StoreTest, AppendsAndReadsRows) {
    { make_store(70, 9); }  // 79 rows: crosses an image_features chunk (64) and token chunks (4)
    auto store = FeatureStore::open(path_);
    ASSERT_EQ(store.rows(), 79);

    std::vector<std::int64_t> all(79);
    std::iota(all.begin(), all.end(), 0);
    const auto cls = store.read_rows(Column::image_features, all);
    EXPECT_EQ(cls.dtype, fstore::DType::f16);
    EXPECT_EQ(cls.shape, (std::vector<std::int64_t>{79, D}));
    for (std::size_t i = 0; i < 79; ++i) expect_cls_row(cls, i, static_cast<std::int64_t>(i));

    const auto ids = store.read_rows(Column::ids, all);
    const auto labels = store.read_rows(Column::labels, all);
    for (std::int64_t i = 0; i < 79; ++i) {
        EXPECT_EQ(ids.data<std::int64_t>()[i], i);
        EXPECT_EQ(labels.data<std::int64_t>()[i], i % 3);
    }
    const auto splits = store.read_all_splits();
    EXPECT_EQ(std::count(splits.begin(), splits.end(), "train"), 70);
    EXPECT_EQ(splits[70], "val");
    const std::map<std::string, std::int64_t> counts{{"train", 70}, {"val", 9}};
    EXPECT_EQ(store.split_counts(), counts);
    EXPECT_EQ(store.split_counts_from_data(), counts);
    // The attribute is written the way Python's json.dumps writes a dict (insertion order).
    EXPECT_EQ(std::get<std::string>(*store.attribute("split_counts")), R"({"train": 70, "val": 9})");
}

TEST_F(StoreTest, ReadsIndexListsInAnyOrderWithRepeats) {
    { make_store(30, 0); }
    auto store = FeatureStore::open(path_);
    const std::vector<std::int64_t> rows{17, 3, 3, 29, 0, 17, 4, 5, 6};
    const auto cls = store.read_rows(Column::image_features, rows);
    ASSERT_EQ(cls.shape[0], 9);
    for (std::size_t i = 0; i < rows.size(); ++i) expect_cls_row(cls, i, rows[i]);

    const auto tokens = store.read_rows(Column::image_token_features, rows);
    EXPECT_EQ(tokens.shape, (std::vector<std::int64_t>{9, T, D}));
    for (std::size_t i = 0; i < rows.size(); ++i)
        for (std::int64_t t = 0; t < T; ++t)
            for (std::int64_t d = 0; d < D; ++d)
                EXPECT_EQ(fstore::half_to_float(tokens.data<std::uint16_t>()[(i * T + t) * D + d]),
                          token_value(rows[i], t, d));
    const auto splits = store.read_splits({29, 1, 29});
    EXPECT_EQ(splits, (std::vector<std::string>{"train", "train", "train"}));
    EXPECT_EQ(store.read_rows(Column::labels, {}).shape, (std::vector<std::int64_t>{0}));
}

TEST_F(StoreTest, OutOfRangeIndexNamesValidRange) {
    { make_store(10, 0); }
    auto store = FeatureStore::open(path_);
    try {
        store.read_rows(Column::image_features, {2, 10});
        FAIL() << "expected UsageError";
    } catch (const fstore::UsageError& e) {
        EXPECT_THAT(e.what(), HasSubstr("0..9"));
        EXPECT_THAT(e.what(), HasSubstr("10"));
    }
    EXPECT_THROW(store.read_rows(Column::labels, {-1}), fstore::UsageError);
    EXPECT_THROW(store.read_splits({11}), fstore::UsageError);
}

TEST_F(StoreTest, ReadOnlyStoreRefusesWrites) {
    { make_store(3, 0); }
    const auto before = fs::last_write_time(path_);
    const auto size = fs::file_size(path_);
    {
        auto store = FeatureStore::open(path_);
        EXPECT_THROW(store.append_batch(make_rows(3, 1, "x").batch()), fstore::UsageError);
        EXPECT_THROW(store.write_template("t", {}), fstore::UsageError);
        EXPECT_THROW(store.set_attribute("a", std::int64_t{1}), fstore::UsageError);
        EXPECT_THROW(store.clear_templates(), fstore::UsageError);
        EXPECT_THROW(store.truncate_rows(1), fstore::UsageError);
    }
    EXPECT_EQ(fs::last_write_time(path_), before);
    EXPECT_EQ(fs::file_size(path_), size);
}

TEST_F(StoreTest, ResumesAppendingAfterReopen) {
    { make_store(5, 0); }
    {
        auto store = FeatureStore::open_or_create(path_, {D, T});
        EXPECT_EQ(store.rows(), 5);
        store.append_batch(make_rows(5, 4, "test").batch());
    }
    auto store = FeatureStore::open(path_);
    EXPECT_EQ(store.rows(), 9);
    expect_cls_row(store.read_rows(Column::image_features, {8}), 0, 8);
    EXPECT_EQ(store.read_rows(Column::ids, {8}).data<std::int64_t>()[0], 8);
    EXPECT_EQ((store.split_counts()), (std::map<std::string, std::int64_t>{{"train", 5}, {"test", 4}}));
}

TEST_F(StoreTest, OpenOrCreateRejectsOtherLayout) {
    { make_store(1, 0); }
    EXPECT_THROW(FeatureStore::open_or_create(path_, {D + 1, T}), fstore::MismatchError);
}

TEST_F(StoreTest, TruncateKeepsCountsInStep) {
    auto store = make_store(6, 4);
    store.truncate_rows(7);
    EXPECT_EQ(store.rows(), 7);
    EXPECT_EQ(store.split_counts(), (std::map<std::string, std::int64_t>{{"train", 6}, {"val", 1}}));
    store.truncate_rows(3);
    EXPECT_EQ(store.split_counts(), (std::map<std::string, std::int64_t>{{"train", 3}}));
    EXPECT_THROW(store.truncate_rows(4), fstore::UsageError);
    // Appending after a truncate continues the ids from the kept rows.
    store.append_batch(make_rows(3, 2, "val").batch());
    const auto ids = store.read_rows(Column::ids, {3, 4});
    EXPECT_EQ(ids.data<std::int64_t>()[0], 3);
    EXPECT_EQ(ids.data<std::int64_t>()[1], 4);
    EXPECT_EQ(store.split_counts_from_data(), store.split_counts());
}

TEST_F(StoreTest, RejectsMalformedBatches) {
    auto store = make_store(0, 0);
    auto rows = make_rows(0, 2, "train");
    auto batch = rows.batch();
    std::vector<std::string> one{"train"};
    batch.splits = &one;
    EXPECT_THROW(store.append_batch(batch), fstore::UsageError);
    std::vector<std::string> empty_name{"train", ""};
    batch.splits = &empty_name;
    EXPECT_THROW(store.append_batch(batch), fstore::UsageError);
    EXPECT_EQ(store.rows(), 0);
    // Missing labels are stored as -1.
    batch = rows.batch();
    batch.labels = nullptr;
    store.append_batch(batch);
    EXPECT_EQ(store.read_rows(Column::labels, {1}).data<std::int64_t>()[0], -1);
}

TEST_F(StoreTest, TemplatesWriteReplaceClear) {
    auto store = make_store(2, 0);
    fstore::TemplateRecord rec;
    rec.texts = {"a cell photo with sign of x", "a cell photo with sign of \xc3\xa9"};
    rec.text_features.resize(2 * D);
    std::iota(rec.text_features.begin(), rec.text_features.end(), 0.5f);
    rec.text_tokens = 3;
    rec.text_token_features.resize(2 * 3 * D);
    std::iota(rec.text_token_features.begin(), rec.text_token_features.end(), -7.0f);
    store.write_template("concept_prompts_t01", rec);

    fstore::TemplateRecord plain;
    plain.texts = {"only"};
    plain.text_features.assign(D, 2.0f);
    store.write_template("label_prompts_t01", plain);

    EXPECT_EQ(store.template_ids(), (std::vector<std::string>{"concept_prompts_t01", "label_prompts_t01"}));
    auto info = store.template_info("concept_prompts_t01");
    EXPECT_EQ(info.rows, 2);
    EXPECT_EQ(info.dim, D);
    EXPECT_EQ(info.text_tokens, 3);
    EXPECT_TRUE(info.has_token_features);
    EXPECT_EQ(info.texts_hash, fstore::texts_hash(rec.texts));
    EXPECT_EQ(store.template_texts("concept_prompts_t01"), rec.texts);
    auto feats = store.read_template("concept_prompts_t01", false);
    EXPECT_EQ(feats.shape, (std::vector<std::int64_t>{2, D}));
    EXPECT_EQ(std::vector<float>(feats.data<float>(), feats.data<float>() + 2 * D), rec.text_features);
    auto toks = store.read_template("concept_prompts_t01", true);
    EXPECT_EQ(toks.shape, (std::vector<std::int64_t>{2, 3, D}));
    EXPECT_EQ(toks.data<float>()[5], rec.text_token_features[5]);

    info = store.template_info("label_prompts_t01");
    EXPECT_EQ(info.text_tokens, -1);
    EXPECT_FALSE(info.has_token_features);
    EXPECT_THROW(store.read_template("label_prompts_t01", true), fstore::UsageError);

    // Replacing a template replaces the whole group (token features disappear).
    store.write_template("concept_prompts_t01", plain);
    EXPECT_FALSE(store.template_info("concept_prompts_t01").has_token_features);
    EXPECT_EQ(store.template_texts("concept_prompts_t01"), plain.texts);

    EXPECT_THROW(store.template_info("nope"), fstore::UsageError);
    fstore::TemplateRecord bad = plain;
    bad.text_features.pop_back();
    EXPECT_THROW(store.write_template("bad", bad), fstore::DataError);
    EXPECT_FALSE(store.has_template("bad"));

    store.clear_templates();
    EXPECT_TRUE(store.template_ids().empty());
    EXPECT_EQ(store.rows(), 2);  // rows untouched
}

TEST_F(StoreTest, TextsHashIsSha256OverNullTerminatedTexts) {
    // Expected digests from Python's hashlib.sha256(b"a\0b\0") etc.
    EXPECT_EQ(fstore::texts_hash({"a", "b"}),
              "8fb20ef63ced4145fc2e983ffe597d1dcff39154c3bf21f0fa9dde6a0c50fdc9");
    EXPECT_EQ(fstore::texts_hash({}), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(fstore::texts_hash({""}), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    EXPECT_NE(fstore::texts_hash({"ab"}), fstore::texts_hash({"a", "b"}));
}

TEST_F(StoreTest, AttributesIncludingJson) {
    {
        auto store = make_store(1, 0);
        store.set_attribute("logit_scale", 2.5);
        store.set_attribute("count", std::int64_t{-3});
        store.set_attribute("note", std::string("h\xc3\xa9llo"));
        store.set_json_attribute("dataset", "bloodmnist");
        store.set_json_attribute("label_texts", nlohmann::json::array({"basophil", "immature granulocytes"}));
        EXPECT_THROW(store.set_attribute("split_counts", std::string("{}")), fstore::UsageError);
    }
    auto store = FeatureStore::open(path_);
    EXPECT_EQ(std::get<double>(*store.attribute("logit_scale")), 2.5);
    EXPECT_EQ(std::get<std::int64_t>(*store.attribute("count")), -3);
    EXPECT_EQ(std::get<std::string>(*store.attribute("note")), "h\xc3\xa9llo");
    EXPECT_FALSE(store.attribute("absent").has_value());
    // Written like Python's json.dumps, so the reference's reader sees identical strings.
    EXPECT_EQ(std::get<std::string>(*store.attribute("dataset")), "\"bloodmnist\"");
    EXPECT_EQ(std::get<std::string>(*store.attribute("label_texts")),
              R"(["basophil", "immature granulocytes"])");
    EXPECT_EQ(*store.json_attribute("dataset"), "bloodmnist");
    EXPECT_EQ(store.json_attribute("label_texts")->at(1), "immature granulocytes");
    EXPECT_EQ(*store.json_attribute("count"), -3);
    EXPECT_THROW(store.json_attribute("note"), fstore::FormatError);
    EXPECT_EQ(store.attributes().count("logit_scale"), 1u);
}

TEST_F(StoreTest, RepairsMissingDatasetsAndTemplates) {
    { make_store(5, 0); }
    {
        auto f = raw_open();
        ASSERT_GE(H5Ldelete(f, "labels", H5P_DEFAULT), 0);
        ASSERT_GE(H5Ldelete(f, "split", H5P_DEFAULT), 0);
        ASSERT_GE(H5Ldelete(f, "templates", H5P_DEFAULT), 0);
    }
    {
        // Read-only: nothing is written; missing columns read as the repair would fill them.
        auto store = FeatureStore::open(path_);
        EXPECT_EQ(store.rows(), 5);
        EXPECT_EQ(store.read_rows(Column::labels, {4}).data<std::int64_t>()[0], -1);
        EXPECT_EQ(store.read_splits({0}), std::vector<std::string>{"unspecified"});
    }
    {
        fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
        EXPECT_FALSE(fstore::h5::exists(f, "labels"));
    }
    {
        auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
        EXPECT_EQ(store.rows(), 5);
    }
    auto store = FeatureStore::open(path_);
    EXPECT_EQ(store.rows(), 5);
    const auto labels = store.read_rows(Column::labels, {0, 4});
    EXPECT_EQ(labels.data<std::int64_t>()[0], -1);
    EXPECT_EQ(store.read_all_splits(), std::vector<std::string>(5, "unspecified"));
    EXPECT_EQ(store.split_counts(), (std::map<std::string, std::int64_t>{{"unspecified", 5}}));
    EXPECT_TRUE(store.template_ids().empty());
    fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
    EXPECT_TRUE(fstore::h5::exists(f, "templates"));
    EXPECT_EQ(fstore::h5::chunk_dims(fstore::h5::open_dataset(f, "labels")), std::vector<hsize_t>{4096});
}

// Token features cannot be made up: a writable open refuses instead of recreating the dataset
// empty (which would make the completeness trim delete every row) and leaves the rows alone.
TEST_F(StoreTest, RefusesToRepairLostTokenFeaturesAndKeepsRows) {
    { make_store(5, 0); }
    {
        auto f = raw_open();
        ASSERT_GE(H5Ldelete(f, "image_token_features", H5P_DEFAULT), 0);
    }
    try {
        FeatureStore::open(path_, FeatureStore::Access::read_write);
        ADD_FAILURE() << "a store without token features opened for writing";
    } catch (const fstore::FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("image_token_features"), std::string::npos) << e.what();
    }
    {
        fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
        EXPECT_EQ(fstore::h5::dims(fstore::h5::open_dataset(f, "image_features"))[0], 5u);
        EXPECT_EQ(fstore::h5::dims(fstore::h5::open_dataset(f, "ids"))[0], 5u);
    }
    // A reader still reads the other columns, and the lost one (also with the T_img
    // attribute gone, when nothing says how many tokens a row had) is a FormatError.
    for (bool without_t_img : {false, true}) {
        if (without_t_img) {
            auto w = raw_open();
            ASSERT_GE(H5Adelete(w, "T_img"), 0);
        }
        auto store = FeatureStore::open(path_);
        EXPECT_EQ(store.rows(), 5);
        expect_cls_row(store.read_rows(Column::image_features, {4}), 0, 4);
        EXPECT_NO_THROW(store.require_column(Column::ids));
        for (const std::vector<std::int64_t>& rows : {std::vector<std::int64_t>{0}, std::vector<std::int64_t>{}}) {
            try {
                store.read_rows(Column::image_token_features, rows);
                ADD_FAILURE() << "read token features that the file does not hold";
            } catch (const fstore::FormatError& e) {
                EXPECT_NE(std::string(e.what()).find("token features of its 5 rows are lost"), std::string::npos)
                    << e.what();
            }
        }
    }
}

// A write the file system refuses (here: over RLIMIT_FSIZE, as a full disk would) is an I/O
// error (exit 10, "free disk space"), not a malformed file (exit 4); the store keeps its rows.
TEST_F(StoreTest, FailingDiskIsAnIoErrorAndKeepsCommittedRows) {
    { make_store(3, 0); }
    const auto failed = fstore::test::run_under_file_limit(fs::file_size(path_) + 4096, [&] {
        auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
        store.append_batch(make_rows(3, 64, "train").batch());
        store.commit();
    });
    EXPECT_EQ(failed.exit_code, static_cast<int>(fstore::ExitCode::io)) << failed.message;
    // The system's reason once: HDF5's message names it already.
    const std::string reason = std::strerror(EFBIG);
    const auto first = failed.message.find(reason);
    EXPECT_NE(first, std::string::npos) << failed.message;
    EXPECT_EQ(failed.message.find(reason, first + 1), std::string::npos) << failed.message;
    auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
    EXPECT_EQ(store.rows(), 3);
}

// Opening for writing writes too (HDF5 rewrites the superblock; the journal records it): on a
// full disk (a 40-byte file-size limit here) that is an I/O error, not "check that the file
// is complete"; a failed create leaves no temporary file behind.
TEST_F(StoreTest, FullDiskAtOpenOrCreateIsAnIoError) {
    { make_store(3, 0); }
    const auto opened = fstore::test::run_under_file_limit(40, [&] {
        FeatureStore::open(path_, FeatureStore::Access::read_write);
    });
    EXPECT_EQ(opened.exit_code, static_cast<int>(fstore::ExitCode::io)) << opened.message;
    EXPECT_NE(opened.message.find("free space"), std::string::npos) << opened.message;
    const fs::path fresh = path_.parent_path() / "fresh.h5";
    const auto created = fstore::test::run_under_file_limit(40, [&] {
        FeatureStore::open_or_create(fresh, {D, T});
    });
    EXPECT_EQ(created.exit_code, static_cast<int>(fstore::ExitCode::io)) << created.message;
    for (const auto& entry : fs::directory_iterator(path_.parent_path()))
        EXPECT_EQ(entry.path().filename().string().find("fresh.h5"), std::string::npos) << entry.path();
    EXPECT_EQ(FeatureStore::open(path_, FeatureStore::Access::read_write).rows(), 3);
}

// Replacing a template deletes the old group first: if writing the new one then fails, the
// old one must come back (the change is rolled back), not a half-written group be committed.
TEST_F(StoreTest, FailedTemplateReplacementKeepsTheOldTemplate) {
    fstore::TemplateRecord old_rec;
    old_rec.texts = {"old a", "old b"};
    old_rec.text_features.assign(2 * D, 0.5f);
    {
        auto store = make_store(2, 0);
        store.write_template("concept_prompts_t01", old_rec);
    }
    const int code = exit_code_under_file_limit(fs::file_size(path_) + 8192, [&] {
        auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
        fstore::TemplateRecord big;
        big.texts.assign(500, "a new prompt that is long enough to need space");
        big.text_features.assign(500 * D, 0.25f);
        big.text_tokens = 40;
        big.text_token_features.assign(static_cast<std::size_t>(500 * 40 * D), 0.125f);
        store.write_template("concept_prompts_t01", big);
    });
    EXPECT_EQ(code, static_cast<int>(fstore::ExitCode::io));
    auto store = FeatureStore::open(path_);
    ASSERT_TRUE(store.has_template("concept_prompts_t01"));
    EXPECT_EQ(store.template_texts("concept_prompts_t01"), old_rec.texts);
    EXPECT_EQ(store.template_info("concept_prompts_t01").rows, 2);
    EXPECT_EQ(store.rows(), 2);
}

TEST_F(StoreTest, TrimsUnequalAndTornRows) {
    { make_store(9, 0); }
    {
        // image_features two rows longer than the rest: those rows are not complete.
        auto f = raw_open();
        auto dset = fstore::h5::open_dataset(f, "image_features");
        hsize_t dims[2] = {11, D};
        ASSERT_GE(H5Dset_extent(dset, dims), 0);
        // And the last row of the others is torn: extents grown but id/split never written.
        for (const char* name : {"image_features", "image_token_features", "ids", "labels", "split"}) {
            auto d = fstore::h5::open_dataset(f, name);
            auto shape = fstore::h5::dims(d);
            shape[0] = std::max<hsize_t>(shape[0], 10);
            ASSERT_GE(H5Dset_extent(d, shape.data()), 0);
        }
    }
    {
        auto store = FeatureStore::open(path_);  // read-only sees only complete rows
        EXPECT_EQ(store.rows(), 9);
    }
    {
        // templates_only edits templates and leaves the torn rows as found for a build to trim.
        auto store = FeatureStore::open(path_, FeatureStore::Access::templates_only);
        EXPECT_TRUE(store.writable());
        EXPECT_EQ(store.rows(), 9);
        store.clear_templates();
        EXPECT_THROW(store.append_batch(make_rows(9, 1, "val").batch()), fstore::UsageError);
        EXPECT_THROW(store.truncate_rows(5), fstore::UsageError);
    }
    {
        fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
        EXPECT_EQ(fstore::h5::dims(fstore::h5::open_dataset(f, "image_features"))[0], 11u);
        EXPECT_EQ(fstore::h5::dims(fstore::h5::open_dataset(f, "ids"))[0], 10u);
    }
    {
        auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
        EXPECT_EQ(store.rows(), 9);
        store.append_batch(make_rows(9, 1, "val").batch());
    }
    fstore::h5::File f(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), "open");
    for (const char* name : {"image_features", "image_token_features", "ids", "labels", "split"})
        EXPECT_EQ(fstore::h5::dims(fstore::h5::open_dataset(f, name))[0], 10u) << name;
    auto store = FeatureStore::open(path_);
    expect_cls_row(store.read_rows(Column::image_features, {9}), 0, 9);
    EXPECT_EQ(store.split_counts(), (std::map<std::string, std::int64_t>{{"train", 9}, {"val", 1}}));
}

TEST_F(StoreTest, ErrorsForMissingDirectoryNotHdf5AndNotStore) {
    EXPECT_THROW(FeatureStore::open(dir_ / "absent.h5"), fstore::NotFoundError);
    try {
        FeatureStore::open(dir_);
        FAIL();
    } catch (const fstore::NotFoundError& e) {
        EXPECT_THAT(e.what(), HasSubstr("directory"));
    }
    std::ofstream(dir_ / "text.h5") << "not hdf5 at all\n";
    try {
        FeatureStore::open(dir_ / "text.h5");
        FAIL();
    } catch (const fstore::FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr("not an HDF5 file"));
    }
    {
        fstore::h5::init();
        fstore::h5::File f(H5Fcreate((dir_ / "other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "create");
        fstore::h5::create_group(f, "something");
    }
    try {
        FeatureStore::open(dir_ / "other.h5", FeatureStore::Access::read_write);
        FAIL();
    } catch (const fstore::FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr("no /image_features"));
    }
    EXPECT_THROW(FeatureStore::open_or_create(dir_ / "no" / "such" / "dir.h5", {D, T}), fstore::NotFoundError);

    {  // /image_features (or another column) that is a group is a damaged store, said so
        fstore::h5::File f(H5Fcreate((dir_ / "group.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "create");
        fstore::h5::create_group(f, "image_features");
    }
    try {
        FeatureStore::open(dir_ / "group.h5");
        FAIL();
    } catch (const fstore::FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr("/image_features is not a dataset"));
    }

    // An empty file (mktemp's): opening it is a FormatError that leaves it empty (HDF5 would
    // write a superblock into it when opened for writing); open_or_create makes the store there.
    const auto empty = dir_ / "empty.h5";
    std::ofstream{empty};
    for (const auto access : {FeatureStore::Access::read_only, FeatureStore::Access::read_write,
                              FeatureStore::Access::templates_only}) {
        try {
            FeatureStore::open(empty, access);
            ADD_FAILURE() << "opened an empty file";
        } catch (const fstore::FormatError& e) {
            EXPECT_THAT(e.what(), HasSubstr("is an empty file"));
        }
        EXPECT_EQ(fs::file_size(empty), 0u);
    }
    // A dangling symlink is named as such (not "does not exist: run fstore build to create it").
    fs::create_symlink("nowhere.h5", dir_ / "dangling.h5");
    try {
        FeatureStore::open_or_create(dir_ / "dangling.h5", {D, T});
        ADD_FAILURE() << "created a store through a dangling symlink";
    } catch (const fstore::NotFoundError& e) {
        EXPECT_THAT(e.what(), HasSubstr("is a symlink to 'nowhere.h5', which does not exist"));
    }
    // Through a symlink it is refused the same way (HDF5 would still write into the target).
    const auto link = dir_ / "link-to-empty.h5";
    fs::create_symlink(empty.filename(), link);
    EXPECT_THROW(FeatureStore::open(link, FeatureStore::Access::read_write), fstore::FormatError);
    EXPECT_THROW(FeatureStore::open_or_create(link, {D, T}), fstore::FormatError);
    EXPECT_EQ(fs::file_size(empty), 0u);
    fs::permissions(empty, fs::perms::owner_read | fs::perms::owner_write);  // mktemp's 0600
    {
        auto store = FeatureStore::open_or_create(empty, {D, T});
        store.append_batch(make_rows(0, 2, "train").batch());
    }
    EXPECT_EQ(FeatureStore::open(empty).rows(), 2);
    EXPECT_EQ(fs::status(empty).permissions(), fs::perms::owner_read | fs::perms::owner_write)
        << "the store keeps the empty file's permission bits";
}

// A journal left under a name whose store was deleted since belongs to no file there: a new
// store created under that name removes it rather than meeting it on its first open.
TEST_F(StoreTest, NewStoreRemovesAStaleJournalUnderItsName) {
    { make_store(2, 0); }
    const auto journal = fs::path(path_.string() + ".journal");
    fs::copy_file(path_, journal);  // any bytes: it is not opened
    fs::remove(path_);
    {
        auto store = FeatureStore::open_or_create(path_, {D, T});
        store.append_batch(make_rows(0, 3, "train").batch());
    }
    EXPECT_FALSE(fs::exists(journal));
    EXPECT_EQ(FeatureStore::open(path_).rows(), 3);
}

// Writes go into the file in place: a store with another hard link (a `cp -al` snapshot)
// is refused by writers, whose journal sits beside one name only; readers still read it.
TEST_F(StoreTest, WritersRefuseAStoreWithHardLinks) {
    { make_store(2, 0); }
    fs::create_hard_link(path_, dir_ / "snapshot.h5");
    try {
        FeatureStore::open(path_, FeatureStore::Access::read_write);
        ADD_FAILURE() << "a writer opened a hard-linked store";
    } catch (const fstore::IoError& e) {
        EXPECT_THAT(e.what(), HasSubstr("2 hard links"));
    }
    EXPECT_EQ(FeatureStore::open(dir_ / "snapshot.h5").rows(), 2);
    fs::remove(dir_ / "snapshot.h5");
    EXPECT_NO_THROW(FeatureStore::open(path_, FeatureStore::Access::read_write));
}

// h5py can write /split as fixed-length bytes ('S8'): readers take it, a writer (which
// appends vlen UTF-8) refuses it up front rather than failing in HDF5's words mid-build.
TEST_F(StoreTest, FixedLengthSplitIsReadButNotAppendedTo) {
    { make_store(2, 0); }
    {
        auto f = raw_open();
        ASSERT_GE(H5Ldelete(f, "split", H5P_DEFAULT), 0);
        fstore::h5::Datatype type(H5Tcopy(H5T_C_S1), "type");
        ASSERT_GE(H5Tset_size(type, 8), 0);
        const hsize_t n = 2;
        fstore::h5::Dataspace space(H5Screate_simple(1, &n, nullptr), "space");
        fstore::h5::Dataset d(H5Dcreate2(f, "split", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create");
        const char values[16] = {'t', 'r', 'a', 'i', 'n', 0, 0, 0, 't', 'r', 'a', 'i', 'n', 0, 0, 0};
        ASSERT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), 0);
    }
    EXPECT_EQ(FeatureStore::open(path_).read_all_splits(), (std::vector<std::string>{"train", "train"}));
    try {
        FeatureStore::open(path_, FeatureStore::Access::read_write);
        ADD_FAILURE() << "a writer opened a store whose /split it cannot append to";
    } catch (const fstore::FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr("variable-length strings"));
    }
    EXPECT_NO_THROW(FeatureStore::open(path_, FeatureStore::Access::templates_only).clear_templates());
}

// A writer that may not write the store, or the directory its journal goes to, gets an I/O
// error (exit 10) that says so, not "not found" (3) or "bad format" (4); readers still read.
TEST_F(StoreTest, StoreThatMayNotBeWrittenIsAnIoError) {
    { make_store(3, 0); }
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(path_, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    using fstore::test::run_unprivileged;
    const auto writer = run_unprivileged([&] { FeatureStore::open(path_, FeatureStore::Access::read_write); });
    EXPECT_EQ(writer.exit_code, static_cast<int>(fstore::ExitCode::io));
    EXPECT_EQ(writer.message, "store '" + path_.string() +
                                  "' is not writable (permission denied): check its permissions, or write to "
                                  "another --h5 path");
    EXPECT_EQ(run_unprivileged([&] { FeatureStore::open_or_create(path_, {D, T}); }).exit_code,
              static_cast<int>(fstore::ExitCode::io));
    const auto reader = run_unprivileged([&] {
        const auto rows = FeatureStore::open(path_).rows();
        if (rows != 3) throw std::runtime_error("the reader saw " + std::to_string(rows) + " rows, not 3");
    });
    EXPECT_EQ(reader.exit_code, 0) << reader.message;

    const fs::path locked_dir = dir_ / "locked";
    fs::create_directory(locked_dir);
    const fs::path inside = locked_dir / "store.h5";
    fs::copy_file(path_, inside);
    fs::permissions(inside, fs::perms::all & ~(fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec));
    fs::permissions(locked_dir, fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                    fs::perm_options::remove);
    const auto journal_dir_writer =
        run_unprivileged([&] { FeatureStore::open(inside, FeatureStore::Access::read_write); });
    EXPECT_EQ(journal_dir_writer.exit_code, static_cast<int>(fstore::ExitCode::io));
    EXPECT_THAT(journal_dir_writer.message, HasSubstr("its directory '" + locked_dir.string() +
                                   "', where its rollback journal goes, is not (permission denied)"));
}

// Creating a store where the directory may not be written: one clean line naming the
// directory, no HDF5 internals (errno, flags, the temporary name), and nothing left behind.
TEST_F(StoreTest, CreatingInReadOnlyDirectoryIsAnIoError) {
    const fs::path read_only = dir_ / "ro";
    fs::create_directory(read_only);
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                                   fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
    const auto creator =
        fstore::test::run_unprivileged([&] { FeatureStore::open_or_create(read_only / "new.h5", {D, T}); });
    EXPECT_EQ(creator.exit_code, static_cast<int>(fstore::ExitCode::io));
    EXPECT_EQ(creator.message, "cannot create store '" + (read_only / "new.h5").string() + "': permission denied in directory '" +
                           read_only.string() + "': choose a writable --h5 path");
    EXPECT_TRUE(fs::is_empty(read_only));
}

// A store whose /image_features an h5py user wrote as float32 (lzf, the format's chunks):
// appends go through HDF5's conversion, not as raw half-float chunks, and reads return
// float32 (nothing rounded to half on the way out).
TEST_F(StoreTest, Float32FeaturesAreAppendedAndReadAsFloat32) {
    { make_store(0, 0); }
    {
        auto file = raw_open();
        ASSERT_GE(H5Ldelete(file, "image_features", H5P_DEFAULT), 0);
        const hsize_t dims[2] = {0, D}, max[2] = {H5S_UNLIMITED, D}, chunk[2] = {64, D};
        fstore::h5::Dataspace space(H5Screate_simple(2, dims, max), "space");
        fstore::h5::PropList dcpl(H5Pcreate(H5P_DATASET_CREATE), "dcpl");
        ASSERT_GE(H5Pset_chunk(dcpl, 2, chunk), 0);
        fstore::lzf::add_to(dcpl);
        fstore::h5::Dataset created(H5Dcreate2(file, "image_features", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl,
                                               H5P_DEFAULT), "create");
    }
    {
        auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
        store.append_batch(make_rows(0, 70, "train").batch());  // one whole chunk and a partial one
        store.append_batch(make_rows(70, 3, "train").batch());
    }
    const auto store = FeatureStore::open(path_);
    EXPECT_EQ(store.column_dtype(Column::image_features), fstore::DType::f32);
    EXPECT_EQ(store.column_dtype(Column::image_token_features), fstore::DType::f16);
    const auto a = store.read_rows(Column::image_features, {0, 63, 64, 72});
    ASSERT_EQ(a.dtype, fstore::DType::f32);
    const std::int64_t rows[] = {0, 63, 64, 72};
    for (std::size_t i = 0; i < 4; ++i)
        for (std::int64_t d = 0; d < D; ++d)
            EXPECT_EQ(a.data<float>()[i * D + static_cast<std::size_t>(d)], cls_value(rows[i], d)) << rows[i];
}

// A writer killed while creating the store leaves `<store>.creating-PID` (no destructor
// ran); the next creation removes it, and leaves a live writer's alone.
TEST_F(StoreTest, CreationRemovesTemporariesOfKilledCreators) {
    const pid_t gone = ::fork();
    if (gone == 0) ::_exit(0);
    ::waitpid(gone, nullptr, 0);
    const fs::path stale = dir_ / ("store.h5.creating-" + std::to_string(gone));
    const fs::path live = dir_ / ("store.h5.creating-" + std::to_string(::getppid()));
    for (const auto& p : {stale, live}) std::ofstream(p) << "half a store";
    { FeatureStore::open_or_create(path_, {D, T}); }
    EXPECT_FALSE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(live));
    EXPECT_EQ(FeatureStore::open(path_).rows(), 0);
}

// A damaged compressed chunk: the error names the store, the dataset and the rows, not
// only HDF5's "filter returned failure during read".
TEST_F(StoreTest, DamagedChunkIsNamedWithItsRows) {
    { make_store(40, 5); }
    haddr_t address = 0;
    hsize_t size = 0;
    {
        auto file = raw_open();
        auto dset = fstore::h5::open_dataset(file, "image_features");
        const hsize_t offset[2] = {0, 0};
        unsigned mask = 1;
        ASSERT_GE(H5Dget_chunk_info_by_coord(dset, offset, &mask, &address, &size), 0);
        ASSERT_EQ(mask, 0u) << "chunk 0 is not compressed: nothing for the filter to fail on";
    }
    {
        std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
        // 0xff first: a back reference before the start of the output, which lzf refuses.
        f.seekp(static_cast<std::streamoff>(address));
        const std::string garbage(static_cast<std::size_t>(size), '\xff');
        f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    }
    const auto store = FeatureStore::open(path_);
    try {
        store.read_rows(Column::image_features, {3, 4});
        ADD_FAILURE() << "no error";
    } catch (const fstore::FormatError& e) {
        EXPECT_THAT(e.what(), HasSubstr("store '" + path_.string() + "': cannot read rows 3..4 of /image_features ("));
        EXPECT_THAT(e.what(), HasSubstr("the file is damaged there; restore it from a copy, or rebuild the store"));
    }
}

// A store cut short (a partial copy, a full disk under another tool) is named truncated or
// corrupt (exit 4), without HDF5's "eof = ..., sblock->base_addr = ..." values.
TEST_F(StoreTest, TruncatedStoreSaysSoWithoutHdf5Internals) {
    { make_store(40, 5); }
    fs::resize_file(path_, fs::file_size(path_) / 2);
    const std::string expected = "'" + path_.string() +
                                 "' is truncated or corrupt (HDF5 end-of-file mismatch): restore it from a "
                                 "copy or rebuild it";
    for (const auto access : {FeatureStore::Access::read_only, FeatureStore::Access::read_write}) {
        try {
            FeatureStore::open(path_, access);
            ADD_FAILURE() << "a truncated store opened";
        } catch (const fstore::FormatError& e) {
            EXPECT_EQ(e.what(), expected);
        }
    }
}

// A reader that may not write the store cannot roll back a killed writer's journal itself.
// It says so (exit 5) even when what the writer left does not open at all, rather than
// calling the store corrupt: one open for writing brings the last commit back.
TEST_F(StoreTest, ReaderThatCannotRollBackNamesTheFixEvenWhenTheFileDoesNotOpen) {
    { make_store(3, 0); }
    // A writer that dies between two commits: HDF5 rewrote the superblock when it opened the
    // file for writing and flushed a change, so the journal holds the superblock's
    // committed bytes.
    const auto writer = fstore::test::run_in_child([&] {
        fstore::h5::PropList fapl(fstore::journal::file_access_plist());
        fstore::h5::File file(H5Fopen(path_.c_str(), H5F_ACC_RDWR, fapl.get()), "journaled open");
        fstore::h5::write_attribute(file, "uncommitted", std::string("change"));
        if (H5Fflush(file.get(), H5F_SCOPE_GLOBAL) < 0) throw std::runtime_error("H5Fflush failed");
        ::_exit(0);  // no close, no commit: as a SIGKILL leaves it
    });
    ASSERT_EQ(writer.exit_code, 0) << writer.message;
    const auto journal = fstore::journal::journal_path(path_);
    ASSERT_TRUE(fs::exists(journal));
    {  // the torn write: the superblock's signature is gone
        std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
        const char zeros[8] = {};
        f.write(zeros, sizeof zeros);
    }
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    fs::permissions(path_, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    const auto reader = fstore::test::run_unprivileged([&] { FeatureStore::open(path_); });
    EXPECT_EQ(reader.exit_code, static_cast<int>(fstore::ExitCode::locked)) << reader.message;
    EXPECT_EQ(reader.message, "store '" + path_.string() + "' has an unfinished commit left by a killed writer ('" +
                                  journal.string() +
                                  "'); open it for writing once (e.g. rerun fstore build) to roll it back");

    fs::permissions(path_, fs::perms::owner_write, fs::perm_options::add);
    EXPECT_EQ(FeatureStore::open(path_, FeatureStore::Access::read_write).rows(), 3);
    EXPECT_FALSE(fs::exists(journal));
}

// Readers and a writer exclude each other. (With HDF5's own locking off, which HDF5 reads
// from the environment once per process, see tests/pipeline/test_build_resume.py.)
TEST_F(StoreTest, LockedWhileAnotherProcessWrites) {
    { make_store(2, 0); }
    int ready[2], release[2];
    ASSERT_EQ(::pipe(ready), 0);
    ASSERT_EQ(::pipe(release), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        int code = 0;
        try {
            auto store = FeatureStore::open(path_, FeatureStore::Access::read_write);
            store.append_batch(make_rows(2, 1, "train").batch());  // committed: no journal left
            char c = 'r';
            (void)!::write(ready[1], &c, 1);
            (void)!::read(release[0], &c, 1);
        } catch (...) {
            code = 1;
        }
        ::_exit(code);
    }
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    try {
        FeatureStore::open(path_);
        ADD_FAILURE() << "expected LockedError";
    } catch (const fstore::LockedError& e) {
        EXPECT_THAT(e.what(), HasSubstr("being written by another process"));
    }
    EXPECT_THROW(FeatureStore::open(path_, FeatureStore::Access::read_write), fstore::LockedError);
    (void)!::write(release[1], &c, 1);
    int status = 0;
    ::waitpid(child, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    auto reader = FeatureStore::open(path_);  // free again once the writer is gone
    EXPECT_EQ(reader.rows(), 3);
    // ... and an open reader keeps writers out.
    EXPECT_EQ(fstore::test::run_in_child([&] { FeatureStore::open(path_, FeatureStore::Access::read_write); }).exit_code,
              static_cast<int>(fstore::ExitCode::locked));
    for (int fd : {ready[0], ready[1], release[0], release[1]}) ::close(fd);
}

TEST_F(StoreTest, MoveOnly) {
    static_assert(!std::is_copy_constructible_v<FeatureStore>);
    auto a = make_store(1, 0);
    FeatureStore b = std::move(a);
    EXPECT_EQ(b.rows(), 1);
    EXPECT_THROW((void)a.rows(), fstore::UsageError);  // NOLINT(bugprone-use-after-move)
}

TEST(LzfCodec, RoundTripsAndRefusesIncompressible) {
    std::vector<std::uint8_t> data(4096);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i % 7);
    std::vector<std::uint8_t> packed(data.size()), back(data.size());
    const auto n = fstore::lzf::compress(data.data(), data.size(), packed.data(), packed.size());
    ASSERT_GT(n, 0u);
    EXPECT_LT(n, data.size() / 4);
    EXPECT_EQ(fstore::lzf::decompress(packed.data(), n, back.data(), back.size()), data.size());
    EXPECT_EQ(back, data);

    std::mt19937 rng(7);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    EXPECT_EQ(fstore::lzf::compress(data.data(), data.size(), packed.data(), packed.size()), 0u);
}

}  // namespace

namespace {

// One check at ConceptCLIP's real shape (D=1152, T_img=729): random-like tokens that lzf
// cannot shrink (chunks stored raw), rows spanning token chunks, reads of scattered rows.
TEST_F(StoreTest, RealisticShapeRoundTrip) {
    constexpr std::int64_t d = 1152, t = 729, n = 10;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<std::uint16_t> cls(n * d), tokens(n * t * d);
    for (auto& v : cls) v = fstore::float_to_half(normal(rng));
    for (auto& v : tokens) v = fstore::float_to_half(normal(rng));
    std::vector<std::int64_t> labels(n, 2);
    {
        auto store = FeatureStore::open_or_create(path_, {d, t});
        for (std::int64_t start : {0, 3}) {  // rows 0-2, then 3-9: the second append completes a chunk
            const std::int64_t count = start == 0 ? 3 : n - 3;
            std::vector<std::string> splits(static_cast<std::size_t>(count), "train");
            fstore::RowBatch batch;
            batch.rows = count;
            batch.image_features = cls.data() + start * d;
            batch.image_token_features = tokens.data() + start * t * d;
            batch.labels = labels.data();
            batch.splits = &splits;
            store.append_batch(batch);
        }
    }
    auto store = FeatureStore::open(path_);
    const std::vector<std::int64_t> rows{9, 1, 5, 1};
    const auto got = store.read_rows(Column::image_token_features, rows);
    ASSERT_EQ(got.shape, (std::vector<std::int64_t>{4, t, d}));
    for (std::size_t i = 0; i < rows.size(); ++i)
        EXPECT_EQ(0, std::memcmp(got.data<std::uint16_t>() + i * t * d,
                                 tokens.data() + rows[i] * t * d, t * d * sizeof(std::uint16_t)))
            << "row " << rows[i];
    const auto got_cls = store.read_rows(Column::image_features, {4});
    EXPECT_EQ(0, std::memcmp(got_cls.data<std::uint16_t>(), cls.data() + 4 * d, d * 2));
}

}  // namespace
