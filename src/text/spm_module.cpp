// The SentencePiece module (libfstore_spm.so): libsentencepiece behind the C ABI of
// spm_api.h. Built with hidden visibility, so these functions are all it exports.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "spm_api.h"

struct fstore_spm {
    sentencepiece::SentencePieceProcessor processor;
};

namespace {

void set_error(char* error, std::size_t error_size, const std::string& message) {
    if (!error || error_size == 0) return;
    const std::size_t n = std::min(message.size(), error_size - 1);
    std::memcpy(error, message.data(), n);
    error[n] = '\0';
}

}  // namespace

#define FSTORE_SPM_EXPORT extern "C" __attribute__((visibility("default")))

FSTORE_SPM_EXPORT int fstore_spm_api_version(void) { return FSTORE_SPM_API_VERSION; }

FSTORE_SPM_EXPORT fstore_spm* fstore_spm_load(const char* data, std::size_t size, char* error,
                                              std::size_t error_size) {
    try {
        auto model = std::make_unique<fstore_spm>();
        const auto status = model->processor.LoadFromSerializedProto(std::string_view(data, size));
        if (!status.ok()) {
            set_error(error, error_size, status.ToString());
            return nullptr;
        }
        return model.release();
    } catch (const std::exception& e) {
        set_error(error, error_size, e.what());
    } catch (...) {
        set_error(error, error_size, "unknown exception");
    }
    return nullptr;
}

FSTORE_SPM_EXPORT void fstore_spm_free(fstore_spm* model) { delete model; }

FSTORE_SPM_EXPORT int fstore_spm_encode(const fstore_spm* model, const char* text, std::size_t size,
                                        int** ids, std::size_t* count, char* error,
                                        std::size_t error_size) {
    *ids = nullptr;
    *count = 0;
    try {
        std::vector<int> out;
        const auto status = model->processor.Encode(std::string_view(text, size), &out);
        if (!status.ok()) {
            set_error(error, error_size, status.ToString());
            return -1;
        }
        *ids = static_cast<int*>(std::malloc(std::max<std::size_t>(out.size(), 1) * sizeof(int)));
        if (!*ids) {
            set_error(error, error_size, "out of memory");
            return -1;
        }
        std::copy(out.begin(), out.end(), *ids);
        *count = out.size();
        return 0;
    } catch (const std::exception& e) {
        set_error(error, error_size, e.what());
    } catch (...) {
        set_error(error, error_size, "unknown exception");
    }
    return -1;
}

FSTORE_SPM_EXPORT void fstore_spm_free_ids(int* ids) { std::free(ids); }

FSTORE_SPM_EXPORT int fstore_spm_piece_to_id(const fstore_spm* model, const char* piece, std::size_t size) {
    try {
        return model->processor.PieceToId(std::string_view(piece, size));
    } catch (...) {
        return -1;
    }
}

FSTORE_SPM_EXPORT int fstore_spm_special_id(const fstore_spm* model, int which) {
    switch (which) {
        case FSTORE_SPM_UNK: return model->processor.unk_id();
        case FSTORE_SPM_BOS: return model->processor.bos_id();
        case FSTORE_SPM_EOS: return model->processor.eos_id();
        case FSTORE_SPM_PAD: return model->processor.pad_id();
        default: return -1;
    }
}

FSTORE_SPM_EXPORT int fstore_spm_vocab_size(const fstore_spm* model) {
    return model->processor.GetPieceSize();
}
