// The real-world failure mode: a process that links LibTorch (and so the system protobuf)
// and also uses the SentencePiece backend. Linking libsentencepiece directly would crash
// this binary before main; the dlopen'ed module must work here and give the same ids as
// the Python reference.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "fstore/tokenizer.hpp"
#include "test_helpers.hpp"

namespace fstore {
namespace {

TEST(SentencePieceWithTorch, DlopenedModuleWorksBesideLibTorch) {
    // Use LibTorch for real so that it is loaded and initialized in this process.
    at::set_num_threads(1);
    EXPECT_EQ(at::get_num_threads(), 1);

    const auto dir = test::make_temp_dir("spm_torch");
    const auto reference = test::run_reference_driver("sentencepiece", dir);
    const auto& c = reference["cases"][0];
    TokenizerConfig config;
    config.type = "sentencepiece";
    config.lowercase = c["config"]["lowercase"].get<bool>();
    config.add_bos = c["config"]["add_bos"].get<bool>();
    config.add_eos = c["config"]["add_eos"].get<bool>();
    config.pad_id = c["config"]["pad_id"].get<std::int64_t>();
    config.padding = c["config"]["padding"].get<std::string>();
    config.context_length = c["context_length"].get<std::int64_t>();
    auto tok = make_tokenizer(config, test::read_file(dir / c["model"].get<std::string>()));
    for (std::size_t i = 0; i < c["texts"].size(); ++i) {
        ASSERT_EQ(tok->encode(c["texts"][i].get<std::string>()), c["ids"][i].get<std::vector<std::int64_t>>())
            << "text #" << i;
    }

    // Both libraries really are in this process.
    const std::string maps = test::read_file("/proc/self/maps");
    EXPECT_NE(maps.find("libtorch_cpu"), std::string::npos);
    EXPECT_NE(maps.find("libfstore_spm.so"), std::string::npos);
    EXPECT_NE(maps.find("libsentencepiece"), std::string::npos);
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fstore
