// Image folder + labels CSV: the CSV is parsed up front (it is small), images are
// decoded lazily (fstore/image_file.hpp), one batch at a time.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "fstore/datasets.hpp"
#include "fstore/digest.hpp"
#include "fstore/error.hpp"
#include "fstore/image_file.hpp"

namespace fstore {
namespace {

namespace fs = std::filesystem;

struct CsvRecord {
    std::vector<std::string> fields;
    int line = 0;  // 1-based line where the record starts
};

// Whether `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF), as HDF5's UTF-8 strings and Python's str need.
bool is_utf8(const std::string& text) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        const unsigned char c = *p;
        std::size_t extra = 0;
        unsigned char low = 0x80, high = 0xBF;  // the allowed range of the second byte
        if (c < 0x80) extra = 0;
        else if (c >= 0xC2 && c <= 0xDF) extra = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            if (c == 0xE0) low = 0xA0;
            if (c == 0xED) high = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            if (c == 0xF0) low = 0x90;
            if (c == 0xF4) high = 0x8F;
        } else {
            return false;
        }
        if (static_cast<std::size_t>(end - p) <= extra) return false;  // cut short
        for (std::size_t k = 1; k <= extra; ++k) {
            const unsigned char b = p[k];
            if (k == 1 ? (b < low || b > high) : (b < 0x80 || b > 0xBF)) return false;
        }
        p += extra + 1;
    }
    return true;
}

// RFC 4180: fields separated by commas, optionally quoted with "; "" inside quotes is a
// quote; quoted fields may hold commas and newlines; CRLF or LF line ends.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& path) {
    // No field may hold a NUL: HDF5 strings end at one (a split name would be cut short).
    if (const auto nul = text.find('\0'); nul != std::string::npos) {
        const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(nul), '\n');
        throw FormatError("'" + path + "' line " + std::to_string(line) +
                          " holds a NUL byte, which is not CSV text (a UTF-16 file?): save it as UTF-8 text");
    }
    std::vector<CsvRecord> records;
    std::size_t i = 0;
    int line = 1;
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) i = 3;  // UTF-8 BOM from spreadsheet tools
    while (i < text.size()) {
        CsvRecord rec;
        rec.line = line;
        std::string field;
        bool end_of_record = false;
        while (!end_of_record) {
            field.clear();
            if (i < text.size() && text[i] == '"') {
                ++i;
                const int start_line = line;
                while (true) {
                    if (i >= text.size()) {
                        throw FormatError("'" + path + "' line " + std::to_string(start_line) +
                                          ": unterminated quoted field: close the quote");
                    }
                    const char c = text[i++];
                    if (c == '"') {
                        if (i < text.size() && text[i] == '"') {
                            field += '"';
                            ++i;
                        } else {
                            break;
                        }
                    } else {
                        if (c == '\n') ++line;
                        field += c;
                    }
                }
                if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                    throw FormatError("'" + path + "' line " + std::to_string(line) +
                                      ": text after a closing quote: quote the whole field");
                }
            } else {
                while (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                    field += text[i++];
                }
            }
            rec.fields.push_back(field);
            if (i >= text.size()) {
                end_of_record = true;
            } else if (text[i] == ',') {
                ++i;
            } else {
                if (text[i] == '\r') ++i;
                if (i < text.size() && text[i] == '\n') ++i;
                ++line;
                end_of_record = true;
            }
        }
        const bool blank = rec.fields.size() == 1 && rec.fields[0].empty();
        if (!blank) records.push_back(std::move(rec));
    }
    return records;
}

std::string trim(const std::string& s) {
    std::size_t b = 0, e = s.size();
    while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
    return s.substr(b, e - b);
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

struct Row {
    std::string path;  // resolved
    std::string shown;  // as written in the CSV, for messages
    std::int64_t label = -1;
};

class FolderSource final : public ImageSource {
public:
    explicit FolderSource(const ImageFolderOptions& o) : options_(o) {
        std::error_code ec;
        if (!fs::is_directory(o.images_dir, ec)) {
            throw NotFoundError("image directory '" + o.images_dir + "' " +
                                (fs::exists(o.images_dir, ec) ? "is not a directory" : "not found") +
                                ": pass the folder that holds the images with --images");
        }
        // Read once, here: the digest is of the bytes parsed, so a CSV edited during the run
        // cannot pair its rows with another file's identity, and a pipe (--labels <(...)) works.
        std::ifstream in;
        if (!fs::is_directory(o.labels_csv, ec)) in.open(o.labels_csv, std::ios::binary);
        std::ostringstream ss;
        if (in.is_open()) ss << in.rdbuf();
        if (!in.is_open() || in.bad()) {
            const char* what = !fs::exists(o.labels_csv, ec)        ? "not found"
                               : fs::is_directory(o.labels_csv, ec) ? "is a directory"
                                                                    : "is not readable";
            throw NotFoundError("labels file '" + o.labels_csv + "' " + what + ": pass the CSV file with --labels");
        }
        const std::string text = ss.str();
        labels_sha256_ = sha256_hex(text.data(), text.size());
        const auto records = parse_csv(text, o.labels_csv);
        if (records.empty()) {
            throw FormatError("'" + o.labels_csv + "' is empty: it needs a header row 'path,label[,split]'");
        }
        int col_path = -1, col_label = -1, col_split = -1;
        const auto& header = records[0].fields;
        for (std::size_t c = 0; c < header.size(); ++c) {
            const std::string h = lower(trim(header[c]));
            if (h == "path") col_path = static_cast<int>(c);
            if (h == "label") col_label = static_cast<int>(c);
            if (h == "split") col_split = static_cast<int>(c);
        }
        if (col_path < 0 || col_label < 0) {
            throw FormatError("'" + o.labels_csv + "' header has no '" + (col_path < 0 ? "path" : "label") +
                              "' column: the first row must name the columns path,label[,split]");
        }
        std::map<std::string, std::vector<Row>> by_split;
        std::vector<std::string> order;  // first appearance
        for (std::size_t r = 1; r < records.size(); ++r) {
            const auto& rec = records[r];
            const auto field = [&](int c) {
                return c >= 0 && static_cast<std::size_t>(c) < rec.fields.size() ? rec.fields[c] : std::string();
            };
            const auto where = "'" + o.labels_csv + "' line " + std::to_string(rec.line);
            if (rec.fields.size() != header.size()) {
                throw FormatError(where + ": " + std::to_string(rec.fields.size()) + " fields but the header has " +
                                  std::to_string(header.size()) + ": quote fields that contain commas");
            }
            Row row;
            row.shown = field(col_path);
            if (trim(row.shown).empty()) throw FormatError(where + ": empty path: give every row an image path");
            const fs::path p(row.shown);
            row.path = (p.is_absolute() ? p : fs::path(o.images_dir) / p).string();
            const std::string label = trim(field(col_label));
            if (!label.empty()) {
                const char* b = label.data();
                const char* e = b + label.size();
                // A leading '+' as Python's int() takes it; not "+-5".
                const bool plus = label.size() > 1 && label[0] == '+' && label[1] != '-';
                auto [ptr, err] = std::from_chars(b + (plus ? 1 : 0), e, row.label);
                if (err != std::errc() || ptr != e) {
                    throw FormatError(where + ": label '" + label + "' is not an integer: labels are class indices");
                }
            }
            std::string split = trim(field(col_split));
            if (split.empty()) split = "train";
            // Split names are stored as UTF-8 strings and read back by name.
            if (!is_utf8(split)) {
                throw FormatError(where + ": split '" + split + "' is not UTF-8 text: save the CSV as UTF-8");
            }
            if (split == "all") {
                throw FormatError(where + ": split 'all' is reserved (fstore-access batch --split all reads every "
                                  "split): rename it in the CSV");
            }
            if (!by_split.count(split)) order.push_back(split);
            by_split[split].push_back(std::move(row));
        }
        if (by_split.empty()) {
            throw DataError("'" + o.labels_csv + "' lists no images, only its header: add rows path,label[,split]");
        }
        for (const auto& s : o.splits) {
            if (by_split.count(s)) continue;
            std::string names;
            for (const auto& name : order) names += (names.empty() ? "" : ", ") + name;
            throw UsageError("--splits names '" + s + "', which '" + o.labels_csv + "' does not have (its splits: " +
                             names + "): use names from its split column (rows without one are train)");
        }
        std::vector<std::string> wanted = o.splits;
        if (wanted.empty()) {
            for (const auto& s : default_splits()) {
                if (by_split.count(s)) wanted.push_back(s);
            }
            for (const auto& s : order) {
                if (std::find(wanted.begin(), wanted.end(), s) == wanted.end()) wanted.push_back(s);
            }
        }
        for (const auto& s : wanted) {
            auto it = by_split.find(s);
            std::vector<Row> rows = it == by_split.end() ? std::vector<Row>() : std::move(it->second);
            info_.push_back({s, static_cast<std::int64_t>(rows.size())});
            rows_.push_back(std::move(rows));
        }
        advance_past_empty();
    }

    const std::vector<SplitInfo>& splits() const override { return info_; }
    std::int64_t position() const override { return position_; }
    std::string current_split() const override {
        return current_ < info_.size() ? info_[current_].name : std::string();
    }
    std::int64_t position_in_split() const override { return in_split_; }

    std::size_t next_batch(std::size_t n, std::vector<Sample>& out) override {
        out.resize(n);
        std::size_t got = 0;
        const std::size_t split = current_;
        while (got < n && current_ == split && current_ < info_.size()) {
            if (decode_next(out[got])) ++got;
        }
        out.resize(got);
        return got;
    }

    std::int64_t skip(std::int64_t n) override {
        std::int64_t dropped = 0;
        const std::size_t split = current_;
        while (dropped < n && current_ == split && current_ < info_.size()) {
            if (decode_next(scratch_)) ++dropped;
        }
        return dropped;
    }

    std::int64_t entry_position() const override { return entries_; }

    std::string fingerprint() const override { return labels_sha256_; }

    std::int64_t skip_entries(std::int64_t n) override {
        if (current_ >= info_.size() || n <= 0) return 0;
        const auto rows = static_cast<std::int64_t>(rows_[current_].size());
        const std::int64_t take = std::min(n, rows - row_);
        row_ += take;
        in_split_ += take;
        position_ += take;
        entries_ += take;
        if (row_ == rows) next_split();
        return take;
    }

private:
    // Decodes the next row into `sample`; false when the row was unreadable and skipped.
    bool decode_next(Sample& sample) {
        const Row& row = rows_[current_][static_cast<std::size_t>(row_)];
        const std::string split = info_[current_].name;
        ++row_;
        ++entries_;
        const bool ok = decode(row, sample);
        if (ok) {
            sample.label = row.label;
            sample.split = split;
            ++in_split_;
            ++position_;
        }
        if (row_ == static_cast<std::int64_t>(rows_[current_].size())) next_split();
        return ok;
    }

    void next_split() {
        ++current_;
        row_ = 0;
        in_split_ = 0;
        advance_past_empty();
    }

    bool decode(const Row& row, Sample& sample) {
        image_.pixels.swap(sample.pixels);  // decode into the sample's buffer
        const std::string reason = decode_image_file(row.path, image_);
        sample.pixels.swap(image_.pixels);
        if (!reason.empty()) {
            if (options_.strict) {
                throw DataError("image '" + row.path + "' (CSV path '" + row.shown + "'): " + reason +
                                ": fix or remove the row, or run without strict mode to skip it");
            }
            if (options_.on_skip) options_.on_skip(row.path, reason);
            return false;
        }
        sample.height = image_.height;
        sample.width = image_.width;
        sample.channels = image_.channels;
        return true;
    }

    void advance_past_empty() {
        while (current_ < info_.size() && rows_[current_].empty()) ++current_;
    }

    ImageFolderOptions options_;
    std::string labels_sha256_;  // of the CSV's bytes as parsed
    std::vector<SplitInfo> info_;
    std::vector<std::vector<Row>> rows_;
    std::size_t current_ = 0;
    std::int64_t row_ = 0;
    std::int64_t in_split_ = 0;
    std::int64_t position_ = 0;
    std::int64_t entries_ = 0;  // CSV rows consumed, unreadable ones included
    Sample scratch_;
    DecodedImage image_;  // decode_image_file's output; its buffer travels to and from the samples
};

}  // namespace

std::unique_ptr<ImageSource> open_image_folder(const ImageFolderOptions& options) {
    if (!image_files_supported()) throw UsageError("cannot read image folder '" + options.images_dir +
                                                   "': " + image_files_unsupported_reason());
    return std::make_unique<FolderSource>(options);
}

}  // namespace fstore
