// The only translation unit that includes LibTorch (compiles in ~12 s: keep it alone).
#include "fstore/model.hpp"

#include <cmath>
#include <cstring>
#include <thread>
#include <utility>

#include <torch/cuda.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include "archive.hpp"
#include "fstore/error.hpp"

namespace fstore {
namespace {

// One line out of a LibTorch error: TorchScript interpreter errors carry a traceback whose
// last line is the actual error ("RuntimeError: index out of range in self").
std::string one_line(const std::string& text) {
    if (text.find("TorchScript interpreter") != std::string::npos) {
        auto end = text.find_last_not_of("\n ");
        if (end != std::string::npos) {
            const auto start = text.rfind('\n', end);
            return text.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
        }
    }
    const auto end = text.find('\n');
    return end == std::string::npos ? text : text.substr(0, end);
}

torch::Device resolve_device(const std::string& spec) {
    if (spec == "cpu") return torch::Device(torch::kCPU);
    int index = 0;
    if (spec == "auto") {
        return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
    }
    if (spec.rfind("cuda", 0) == 0) {
        if (spec.size() > 4) {
            const std::string number = spec.substr(5);
            if (spec[4] != ':' || number.empty() || number.size() > 3 ||
                number.find_first_not_of("0123456789") != std::string::npos) {
                throw UsageError("bad --device '" + spec + "': use auto, cpu, cuda or cuda:N");
            }
            index = std::stoi(number);
        }
        if (!torch::cuda::is_available()) {
            throw UsageError("--device " + spec + " asked for CUDA but this LibTorch sees no CUDA device: "
                             "use --device cpu (or a CUDA build of LibTorch)");
        }
        if (static_cast<std::size_t>(index) >= torch::cuda::device_count()) {
            throw UsageError("--device " + spec + ": only " + std::to_string(torch::cuda::device_count()) +
                             " CUDA device(s) visible: pick cuda:0..cuda:" +
                             std::to_string(torch::cuda::device_count() - 1));
        }
        return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
    }
    throw UsageError("bad --device '" + spec + "': use auto, cpu, cuda or cuda:N");
}

at::ScalarType scalar_type(Precision p) {
    switch (p) {
        case Precision::fp16: return at::kHalf;
        case Precision::bf16: return at::kBFloat16;
        case Precision::fp32: break;
    }
    return at::kFloat;
}

at::ScalarType scalar_type(OutputType t) { return t == OutputType::float16 ? at::kHalf : at::kFloat; }
std::size_t element_size(OutputType t) { return t == OutputType::float16 ? 2 : 4; }

std::optional<double> scalar_attribute(const torch::jit::Module& module, const char* name) {
    if (!module.hasattr(name)) return std::nullopt;
    const auto value = module.attr(name);
    if (value.isTensor()) {
        const auto t = value.toTensor();
        if (t.numel() != 1) return std::nullopt;
        return t.to(torch::kCPU, at::kDouble).item<double>();
    }
    if (value.isDouble()) return value.toDouble();
    if (value.isInt()) return static_cast<double>(value.toInt());
    return std::nullopt;
}

}  // namespace

Precision parse_precision(const std::string& text) {
    if (text == "fp32") return Precision::fp32;
    if (text == "fp16") return Precision::fp16;
    if (text == "bf16") return Precision::bf16;
    throw UsageError("bad --precision '" + text + "': use fp32, fp16 or bf16");
}

const char* to_string(Precision precision) noexcept {
    switch (precision) {
        case Precision::fp16: return "fp16";
        case Precision::bf16: return "bf16";
        case Precision::fp32: break;
    }
    return "fp32";
}

bool cuda_available() { return torch::cuda::is_available(); }

struct ClipModel::Impl {
    std::string path;
    ModelConfig config;
    LogitScalars scalars;
    torch::jit::Module module;
    torch::Device device{torch::kCPU};
    Precision precision = Precision::fp32;
    int threads = 1;
    // CUDA only: page-locked staging so host<->device copies run asynchronously (grown on demand).
    at::Tensor pinned_in, pinned_cls, pinned_tokens;

    bool on_cuda() const { return device.is_cuda(); }

    // A pinned host tensor of `type` and `sizes`, reusing `buffer` when it is large enough.
    static at::Tensor pinned(at::Tensor& buffer, at::IntArrayRef sizes, at::ScalarType type) {
        const std::int64_t n = c10::multiply_integers(sizes);
        if (!buffer.defined() || buffer.scalar_type() != type || buffer.numel() < n) {
            buffer = at::empty({n}, at::TensorOptions().dtype(type).pinned_memory(true));
        }
        return buffer.narrow(0, 0, n).view(sizes);
    }

    // Host input -> device tensor of the model's dtype.
    at::Tensor upload(const void* data, at::IntArrayRef sizes, at::ScalarType type, bool cast_to_model) {
        const auto host = at::from_blob(const_cast<void*>(data), sizes, at::TensorOptions().dtype(type));
        at::Tensor x;
        if (on_cuda()) {
            auto stage = pinned(pinned_in, sizes, type);
            std::memcpy(stage.data_ptr(), data, host.numel() * host.element_size());
            x = stage.to(device, /*non_blocking=*/true);
        } else {
            x = host;
        }
        return cast_to_model ? x.to(scalar_type(precision)) : x;
    }

    std::pair<at::Tensor, at::Tensor> call(const char* method, const at::Tensor& input) {
        c10::IValue result;
        try {
            result = module.get_method(method)({input});
        } catch (const c10::Error& e) {
            throw ModelError("'" + path + "': " + method + " failed: " + one_line(e.what_without_backtrace()) +
                             ": check the inputs (ids < vocabulary size) or the archive");
        } catch (const std::runtime_error& e) {  // torch::jit::JITException and friends
            throw ModelError("'" + path + "': " + method + " failed: " + one_line(e.what()) +
                             ": check the inputs (ids < vocabulary size) or the archive");
        }
        if (!result.isTuple() || result.toTupleRef().elements().size() != 2 ||
            !result.toTupleRef().elements()[0].isTensor() || !result.toTupleRef().elements()[1].isTensor()) {
            throw ModelError("'" + path + "': " + method +
                             " must return a tuple (cls, tokens) of two tensors: re-export the model "
                             "(docs/model-format.md)");
        }
        const auto& items = result.toTupleRef().elements();
        return {items[0].toTensor(), items[1].toTensor()};
    }

    void check_shapes(const char* method, const at::Tensor& cls, const at::Tensor& tokens, std::int64_t batch,
                      std::int64_t token_count) const {
        const std::int64_t d = config.embed_dim;
        auto shape = [](const at::Tensor& t) {
            std::string s = "[";
            for (std::int64_t i = 0; i < t.dim(); ++i) s += (i ? "," : "") + std::to_string(t.size(i));
            return s + "]";
        };
        // Complex values would lose their imaginary part in the copy, integers their meaning.
        for (const auto* t : {&cls, &tokens}) {
            if (!t->is_floating_point()) {
                throw ModelError("'" + path + "': " + method + " returned " + (t == &cls ? "cls" : "tokens") +
                                 " of type " + std::string(c10::toString(t->scalar_type())) +
                                 ": the archive contract wants real floating-point embeddings; re-export the model");
            }
        }
        // A batch size other than the input's: a trace that froze the batch it was traced at.
        for (const auto* t : {&cls, &tokens}) {
            if (t->dim() >= 1 && t->size(0) != batch) {
                throw ModelError("'" + path + "': " + method + " returned " + (t == &cls ? "cls " : "tokens ") +
                                 shape(*t) + " for a batch of " + std::to_string(batch) +
                                 ": its batch dimension is fixed (traced at one batch size?); re-export the model "
                                 "with torch.jit.script or a dynamic batch (scripts/export_conceptclip.py)");
            }
        }
        if (cls.dim() != 2 || cls.size(1) != d) {
            throw ModelError("'" + path + "': " + method + " returned cls " + shape(cls) + " but config.json promises [" +
                             std::to_string(batch) + "," + std::to_string(d) +
                             "] (embed_dim " + std::to_string(d) + "): fix embed_dim or re-export the model");
        }
        if (tokens.dim() != 3 || tokens.size(1) != token_count || tokens.size(2) != d) {
            throw ModelError("'" + path + "': " + method + " returned tokens " + shape(tokens) +
                             " but config.json promises [" + std::to_string(batch) + "," +
                             std::to_string(token_count) + "," + std::to_string(d) +
                             "]: fix image_tokens/embed_dim or re-export the model");
        }
    }

    // Casts on the device, then copies into the caller's buffers. What the model returned
    // (a meta or sparse tensor, say) can fail the copy: that is the archive's fault, in one line.
    void deliver(const char* method, const at::Tensor& cls, const at::Tensor& tokens, const EmbeddingTarget& out) {
        if (!out.cls || !out.tokens) throw UsageError("encode: EmbeddingTarget needs both cls and tokens buffers");
        try {
            copy_out(method, cls, tokens, out);
        } catch (const c10::Error& e) {
            throw ModelError("'" + path + "': the output of " + method + " cannot be copied out (" +
                             one_line(e.what_without_backtrace()) +
                             "): it must return dense tensors with data; re-export the model");
        }
    }

    void copy_out(const char* method, const at::Tensor& cls, const at::Tensor& tokens, const EmbeddingTarget& out) {
        const auto type = scalar_type(out.type);
        const auto opts = at::TensorOptions().dtype(type);
        if (!on_cuda()) {
            // One pass: cast while copying straight into the caller's memory.
            const auto c = at::from_blob(out.cls, cls.sizes(), opts).copy_(cls);
            const auto t = at::from_blob(out.tokens, tokens.sizes(), opts).copy_(tokens);
            check_finite(method, c, t);
            return;
        }
        const auto c = cls.to(type).contiguous();
        const auto t = tokens.to(type).contiguous();
        auto cls_stage = pinned(pinned_cls, c.sizes(), type);
        auto tok_stage = pinned(pinned_tokens, t.sizes(), type);
        cls_stage.copy_(c, /*non_blocking=*/true);
        tok_stage.copy_(t, /*non_blocking=*/true);
        check_finite(method, c, t);  // queued after the copies; its result waits for them
        torch::cuda::synchronize(device.index());
        std::memcpy(out.cls, cls_stage.data_ptr(), c.numel() * element_size(out.type));
        std::memcpy(out.tokens, tok_stage.data_ptr(), t.numel() * element_size(out.type));
    }

    // NaN or infinity in what is about to be stored (also an fp16 output beyond +-65504):
    // refused before a row of the batch is written. A sum in double is finite exactly when
    // every value is, and costs one pass without a temporary.
    void check_finite(const char* method, const at::Tensor& cls, const at::Tensor& tokens) const {
        const double total = (cls.sum(at::kDouble) + tokens.sum(at::kDouble)).item<double>();  // one sync
        if (!std::isfinite(total)) {
            throw ModelError("'" + path + "': " + method + " returned NaN or infinite values" +
                             (cls.scalar_type() == at::kHalf ? " (or values beyond float16's range)" : "") +
                             ": nothing of this batch is stored; check the archive's weights (re-export the "
                             "model) or the inputs");
        }
    }

    void encode_images(const float* pixels, std::int64_t batch, const EmbeddingTarget& out) {
        if (batch <= 0) throw UsageError("encode_images: batch must be positive");
        c10::InferenceMode guard;
        const std::int64_t s = config.image_size;
        const auto x = upload(pixels, {batch, 3, s, s}, at::kFloat, true);
        const auto [cls, tokens] = call("encode_image", x);
        check_shapes("encode_image", cls, tokens, batch, config.image_tokens);
        deliver("encode_image", cls, tokens, out);
    }

    void encode_texts(const std::int64_t* ids, std::int64_t batch, std::int64_t length, const EmbeddingTarget& out) {
        if (batch <= 0 || length <= 0) throw UsageError("encode_texts: batch and length must be positive");
        if (length > config.context_length) {
            throw UsageError("encode_texts: " + std::to_string(length) + " tokens exceed the model's context length " +
                             std::to_string(config.context_length) + ": truncate when tokenizing");
        }
        c10::InferenceMode guard;
        const auto x = upload(ids, {batch, length}, at::kLong, false);
        const auto [cls, tokens] = call("encode_text", x);
        check_shapes("encode_text", cls, tokens, batch, length);
        deliver("encode_text", cls, tokens, out);
    }

    // Two rows, so that a batch dimension frozen at export shows here, before any store is
    // touched; the second image is not blank, so that outputs that go bad on real pixels do.
    void probe() {
        constexpr std::int64_t rows = 2;
        const std::int64_t s = config.image_size, d = config.embed_dim;
        const auto per_image = static_cast<std::size_t>(3 * s * s);
        std::vector<float> pixels(rows * per_image, 0.0f);
        for (std::size_t i = 0; i < per_image; ++i) pixels[per_image + i] = static_cast<float>(i % 17) / 8.0f - 1.0f;
        std::vector<float> cls(rows * d), tokens(static_cast<std::size_t>(rows * config.image_tokens * d));
        encode_images(pixels.data(), rows, {OutputType::float32, cls.data(), tokens.data()});
        check_normalized("encode_image", cls);
        const auto ids = detail::probe_token_ids(config);
        std::vector<std::int64_t> id_rows;
        for (std::int64_t r = 0; r < rows; ++r) id_rows.insert(id_rows.end(), ids.begin(), ids.end());
        const auto length = static_cast<std::int64_t>(ids.size());
        tokens.resize(static_cast<std::size_t>(rows * length * d));
        encode_texts(id_rows.data(), rows, length, {OutputType::float32, cls.data(), tokens.data()});
        check_normalized("encode_text", cls);
    }

    // Every row of `cls` (rows of embed_dim values) has norm 1.
    void check_normalized(const char* method, const std::vector<float>& cls) const {
        const auto d = static_cast<std::size_t>(config.embed_dim);
        const double tolerance = precision == Precision::fp32 ? 1e-3 : 3e-2;
        for (std::size_t row = 0; row + d <= cls.size(); row += d) {
            double sum = 0;
            for (std::size_t i = row; i < row + d; ++i) sum += static_cast<double>(cls[i]) * cls[i];
            if (!(std::abs(std::sqrt(sum) - 1.0) < tolerance)) {
                throw ModelError("'" + path + "': " + method + " returned a CLS vector of norm " +
                                 std::to_string(std::sqrt(sum)) +
                                 ", the archive contract wants it L2-normalized: re-export with normalize=True");
            }
        }
    }
};

ClipModel::ClipModel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClipModel::ClipModel(ClipModel&&) noexcept = default;
ClipModel& ClipModel::operator=(ClipModel&&) noexcept = default;
ClipModel::~ClipModel() = default;

ClipModel ClipModel::load(const std::string& path, const ModelOptions& options) {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->precision = options.precision;
    if (options.threads < 0) throw UsageError("--threads must be >= 0 (0 = all cores)");
    impl->threads = options.threads > 0 ? options.threads
                                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    impl->device = resolve_device(options.device);
    if (!impl->device.is_cuda() && options.precision != Precision::fp32) {
        throw UsageError(std::string("--precision ") + to_string(options.precision) +
                         " needs a CUDA device (running on cpu): use --precision fp32");
    }
    // Config and tokenizer first (cheap, and the most likely thing to be wrong).
    impl->config = detail::read_archive_config(path);
    at::set_num_threads(impl->threads);
    try {
        impl->module = torch::jit::load(path, impl->device);
    } catch (const c10::Error& e) {
        throw ModelError("'" + path + "' could not be loaded by LibTorch (" + one_line(e.what_without_backtrace()) +
                         "): re-export it with this LibTorch's PyTorch version or older");
    }
    for (const char* method : {"encode_image", "encode_text"}) {
        if (!impl->module.find_method(method)) {
            throw ModelError("'" + path + "' has no method " + method +
                             ": mark it @torch.jit.export when scripting (scripts/export_conceptclip.py does)");
        }
    }
    impl->module.eval();
    auto& s = impl->scalars;
    s.logit_scale = scalar_attribute(impl->module, "logit_scale");
    s.logit_bias = scalar_attribute(impl->module, "logit_bias");
    s.concept_logit_scale = scalar_attribute(impl->module, "concept_logit_scale");
    s.concept_logit_bias = scalar_attribute(impl->module, "concept_logit_bias");
    if (options.precision != Precision::fp32) impl->module.to(scalar_type(options.precision));
    if (options.probe) impl->probe();
    return ClipModel(std::move(impl));
}

const ModelConfig& ClipModel::config() const noexcept { return impl_->config; }
const LogitScalars& ClipModel::logit_scalars() const noexcept { return impl_->scalars; }
const std::string& ClipModel::path() const noexcept { return impl_->path; }
std::string ClipModel::device() const { return impl_->device.str(); }
Precision ClipModel::precision() const noexcept { return impl_->precision; }
int ClipModel::threads() const noexcept { return impl_->threads; }
std::string ClipModel::archive_sha256() const { return file_sha256(impl_->path); }

void ClipModel::encode_images(const float* pixels, std::int64_t batch, const EmbeddingTarget& out) {
    impl_->encode_images(pixels, batch, out);
}

void ClipModel::encode_texts(const std::int64_t* ids, std::int64_t batch, std::int64_t length,
                             const EmbeddingTarget& out) {
    impl_->encode_texts(ids, batch, length, out);
}

namespace {
Embeddings allocate(OutputType type, std::int64_t batch, std::int64_t tokens, std::int64_t dim, EmbeddingTarget& target) {
    Embeddings e;
    e.type = type;
    e.batch = batch;
    e.tokens = tokens;
    e.dim = dim;
    const auto n_cls = static_cast<std::size_t>(batch * dim), n_tok = static_cast<std::size_t>(batch * tokens * dim);
    target.type = type;
    if (type == OutputType::float32) {
        e.cls_f32.resize(n_cls);
        e.tokens_f32.resize(n_tok);
        target.cls = e.cls_f32.data();
        target.tokens = e.tokens_f32.data();
    } else {
        e.cls_f16.resize(n_cls);
        e.tokens_f16.resize(n_tok);
        target.cls = e.cls_f16.data();
        target.tokens = e.tokens_f16.data();
    }
    return e;
}
}  // namespace

Embeddings ClipModel::encode_images(const float* pixels, std::int64_t batch, OutputType type) {
    EmbeddingTarget target;
    auto e = allocate(type, batch, impl_->config.image_tokens, impl_->config.embed_dim, target);
    encode_images(pixels, batch, target);
    return e;
}

Embeddings ClipModel::encode_texts(const std::int64_t* ids, std::int64_t batch, std::int64_t length, OutputType type) {
    EmbeddingTarget target;
    auto e = allocate(type, batch, length, impl_->config.embed_dim, target);
    encode_texts(ids, batch, length, target);
    return e;
}

}  // namespace fstore
