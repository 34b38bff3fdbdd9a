// decode_dump IMAGE PIXELS: decodes IMAGE with fstore::decode_image_file and writes its
// pixels (height x width x channels bytes) to PIXELS, printing "HEIGHT WIDTH CHANNELS".
// Exit 1 with "unreadable: REASON" when the file is not a readable image, 2 with
// "refused: MESSAGE" for a DataError. test_decode_parity.py compares the pixels with PIL's.
#include <fstream>
#include <iostream>

#include "fstore/error.hpp"
#include "fstore/image_file.hpp"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: decode_dump IMAGE PIXELS\n";
        return 64;
    }
    fstore::DecodedImage image;
    try {
        if (const std::string reason = fstore::decode_image_file(argv[1], image); !reason.empty()) {
            std::cout << "unreadable: " << reason << "\n";
            return 1;
        }
    } catch (const fstore::DataError& e) {
        std::cout << "refused: " << e.what() << "\n";
        return 2;
    }
    std::ofstream(argv[2], std::ios::binary)
        .write(reinterpret_cast<const char*>(image.pixels.data()), static_cast<std::streamsize>(image.pixels.size()));
    std::cout << image.height << " " << image.width << " " << image.channels << "\n";
    return 0;
}
