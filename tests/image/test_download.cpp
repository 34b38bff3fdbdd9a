// Downloads against a local HTTP server (range_server.py) on 127.0.0.1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "fstore/download.hpp"
#include "fstore/error.hpp"
#include "test_util.hpp"

namespace fstore {
namespace {

namespace fs = std::filesystem;

class DownloadTest : public ::testing::Test {
protected:
    void SetUp() override {
        for (const char* v : {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"}) ::unsetenv(v);
        fs::create_directories(served);
        std::mt19937 rng(42);
        payload.resize(300000);
        for (auto& b : payload) b = static_cast<std::uint8_t>(rng());
        test::write_bytes(served + "/data.bin", payload);
        // The expected MD5 comes from Python's hashlib, not from the code under test.
        test::run_python("-c \"import hashlib,sys; open(sys.argv[2],'w').write(hashlib.md5(open(sys.argv[1],'rb').read()).hexdigest())\" '" +
                         served + "/data.bin' '" + (dir / "md5") + "'");
        std::ifstream(dir / "md5") >> md5;
        ASSERT_EQ(md5.size(), 32u);

        const std::string port_file = dir / "port";
        pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            const std::string script = test::source_path("tests/image/range_server.py");
            ::execl(FSTORE_PYTHON, FSTORE_PYTHON, script.c_str(), served.c_str(), port_file.c_str(), log.c_str(),
                    static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // Up to 30 s: Python starts slowly on a loaded machine.
        for (int i = 0; i < 1200 && !fs::exists(port_file); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(25));
        ASSERT_TRUE(fs::exists(port_file)) << "server did not start";
        std::string port;
        std::ifstream(port_file) >> port;
        base = "http://127.0.0.1:" + port;
    }
    void TearDown() override {
        if (pid > 0) {
            ::kill(pid, SIGTERM);
            ::waitpid(pid, nullptr, 0);
        }
    }
    std::string log_text() const {
        std::ifstream in(log);
        return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    }

    test::TempDir dir;
    std::string served = dir / "served";
    std::string log = dir / "requests.log";
    std::vector<std::uint8_t> payload;
    std::string md5;
    pid_t pid = -1;
    std::string base;
};

TEST_F(DownloadTest, FullDownloadWithProgress) {
    const std::string dest = dir / "out/data.bin";
    std::uint64_t last_done = 0, last_total = 0;
    DownloadOptions o;
    o.progress = [&](std::uint64_t done, std::uint64_t total) {
        last_done = done;
        last_total = total;
        return true;
    };
    EXPECT_EQ(download_file(base + "/data.bin", dest, md5, o), payload.size());
    EXPECT_EQ(test::read_bytes(dest), payload);
    EXPECT_FALSE(fs::exists(dest + ".part"));
    EXPECT_EQ(last_done, payload.size());
    EXPECT_EQ(last_total, payload.size());
    EXPECT_EQ(md5_file(dest), md5);
}

TEST_F(DownloadTest, ResumesFromPartialFile) {
    const std::string dest = dir / "data.bin";
    test::write_bytes(dest + ".part", std::vector<std::uint8_t>(payload.begin(), payload.begin() + 123456));
    EXPECT_EQ(download_file(base + "/data.bin", dest, md5), payload.size() - 123456);
    EXPECT_EQ(test::read_bytes(dest), payload);
    EXPECT_FALSE(fs::exists(dest + ".part"));
    EXPECT_NE(log_text().find("/data.bin bytes=123456-"), std::string::npos) << log_text();
}

TEST_F(DownloadTest, ChecksumMismatchDeletesPartAndFails) {
    const std::string dest = dir / "data.bin";
    EXPECT_THROW(download_file(base + "/data.bin", dest, std::string(32, '0')), NetworkError);
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_FALSE(fs::exists(dest + ".part"));
    // A corrupt partial file is caught too (and deleted), whatever the server sends.
    auto bad = std::vector<std::uint8_t>(payload.begin(), payload.begin() + 1000);
    bad[10] ^= 1;
    test::write_bytes(dest + ".part", bad);
    EXPECT_THROW(download_file(base + "/data.bin", dest, md5), NetworkError);
    EXPECT_FALSE(fs::exists(dest + ".part"));
    EXPECT_FALSE(fs::exists(dest));
}

TEST_F(DownloadTest, NotFoundIsNetworkError) {
    const std::string dest = dir / "x.bin";
    try {
        download_file(base + "/nope.bin", dest, md5);
        FAIL() << "no exception";
    } catch (const NetworkError& e) {
        EXPECT_NE(std::string(e.what()).find("404"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dest));
}

TEST_F(DownloadTest, CancelKeepsPartForResume) {
    const std::string dest = dir / "data.bin";
    DownloadOptions o;
    o.progress = [](std::uint64_t done, std::uint64_t) { return done == 0; };
    EXPECT_THROW(download_file(base + "/data.bin", dest, md5, o), InterruptedError);
    EXPECT_FALSE(fs::exists(dest));
    ASSERT_TRUE(fs::exists(dest + ".part"));
    const auto kept = fs::file_size(dest + ".part");
    EXPECT_EQ(download_file(base + "/data.bin", dest, md5), payload.size() - kept);
    EXPECT_EQ(test::read_bytes(dest), payload);
}

TEST_F(DownloadTest, MedmnistUsesTableNameAndOverridableBase) {
    test::TempDir root;
    // Served content does not match the published MD5: the .part must go.
    test::write_bytes(served + "/bloodmnist_64.npz", payload);
    DownloadOptions o;
    o.url_base = base + "/";
    EXPECT_THROW(download_medmnist("bloodmnist", 64, root.path().string(), o), NetworkError);
    EXPECT_NE(log_text().find("/bloodmnist_64.npz?download=1 -"), std::string::npos) << log_text();
    EXPECT_FALSE(fs::exists(root / "bloodmnist_64.npz.part"));
    EXPECT_FALSE(fs::exists(root / "bloodmnist_64.npz"));

    ::setenv("FSTORE_MEDMNIST_URL_BASE", base.c_str(), 1);
    EXPECT_THROW(download_medmnist("bloodmnist", 28, root.path().string()), NetworkError);  // 404 here
    ::unsetenv("FSTORE_MEDMNIST_URL_BASE");
    EXPECT_NE(log_text().find("/bloodmnist.npz?download=1"), std::string::npos) << log_text();

    EXPECT_EQ(medmnist_file("BloodMNIST", 224).file_name, "bloodmnist_224.npz");
    EXPECT_EQ(medmnist_file("bloodmnist", 28).md5, "7053d0359d879ad8a5505303e11de1dc");
    EXPECT_THROW(medmnist_file("bloodmnist", 32), UsageError);
    EXPECT_THROW(medmnist_file("pathmnist", 28), UsageError);
}

}  // namespace
}  // namespace fstore
