# Warnings and sanitizers, applied to our own targets only (never to dependencies).

# fstore_warnings_only: the warnings without the sanitizers, for code that other programs
# load (the HDF5 plugin): the sanitizer runtime must come first in a process, and h5dump or
# h5py are not built with it.
add_library(fstore_warnings_only INTERFACE)
target_compile_options(fstore_warnings_only INTERFACE -Wall -Wextra -Wpedantic -Wshadow=local)
add_library(fstore_warnings INTERFACE)
target_link_libraries(fstore_warnings INTERFACE fstore_warnings_only)

if(FSTORE_SANITIZE)
  # Note: ASan does not support RTLD_DEEPBIND, which the SentencePiece backend's dlopen
  # needs when LibTorch is in the process (docs: platform-facts.md). Tokenizer-only test
  # binaries still run under the sanitizers.
  target_compile_options(fstore_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(fstore_warnings INTERFACE -fsanitize=address,undefined)
endif()
