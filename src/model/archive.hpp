// Reading an fstore model archive without LibTorch: the archive is a zip written by
// torch.jit.save, whose members live under one top-level folder ("<name>/code/...",
// "<name>/data.pkl", "<name>/extra/<extra file>"). torch::jit::load only returns the extra
// files one asks for by name, so config and tokenizer are read here with libzip, before the
// (possibly large) module is deserialized: a wrong file fails fast.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "fstore/model.hpp"

namespace fstore::detail {

// Opens `path` as a zip, checks it is a TorchScript archive, reads and validates
// fstore/config.json and the tokenizer file it names. Throws NotFoundError / ModelError.
ModelConfig read_archive_config(const std::string& path);

// Two token ids that are not the padding id, for the load-time probe of encode_text (an
// all-padding row would average over nothing).
std::array<std::int64_t, 2> probe_token_ids(const ModelConfig& config);

}  // namespace fstore::detail
