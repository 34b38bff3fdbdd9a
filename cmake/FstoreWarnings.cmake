# Warnings and sanitizers, applied to our own targets only (never to dependencies).
add_library(fstore_warnings INTERFACE)
target_compile_options(fstore_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow=local)

if(FSTORE_SANITIZE)
  # Note: ASan does not support RTLD_DEEPBIND, which the SentencePiece backend's dlopen
  # needs when LibTorch is in the process (docs: platform-facts.md). Tokenizer-only test
  # binaries still run under the sanitizers.
  target_compile_options(fstore_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer)
  target_link_options(fstore_warnings INTERFACE -fsanitize=address,undefined)
endif()
