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
  # After the build type's flags, so these win. UBSan's checks make the optimizer slow:
  # src/access/query.cpp took 120 s at -O2 -g and 29 s at -Og -g1 (GCC 12, one core), and
  # the sanitized build was most of CI's time. -g1 keeps the line tables reports need.
  set(FSTORE_SANITIZE_OPT_FLAGS "-Og;-g1" CACHE STRING
      "Optimization/debug flags of sanitized builds, semicolon-separated (empty: the build type's)")
  target_compile_options(fstore_warnings INTERFACE ${FSTORE_SANITIZE_OPT_FLAGS})
endif()
