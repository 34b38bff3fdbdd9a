/* Internal: the C ABI between fstore_text and the SentencePiece module (libfstore_spm.so).
 *
 * Debian's libsentencepiece exports its own protobuf 3.14 symbols, which clash with the
 * protobuf LibTorch uses: one process linking both crashes before main. The module links
 * libsentencepiece, exports only these C functions, and is loaded with
 * dlopen(RTLD_LOCAL | RTLD_DEEPBIND), so its protobuf never meets LibTorch's
 * (docs: platform-facts.md). No C++ type or exception crosses this boundary. */
#ifndef FSTORE_TEXT_SPM_API_H
#define FSTORE_TEXT_SPM_API_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FSTORE_SPM_API_VERSION 1

typedef struct fstore_spm fstore_spm;

enum fstore_spm_special { FSTORE_SPM_UNK = 0, FSTORE_SPM_BOS = 1, FSTORE_SPM_EOS = 2, FSTORE_SPM_PAD = 3 };

/* FSTORE_SPM_API_VERSION of the module. */
typedef int (*fstore_spm_api_version_fn)(void);
/* Loads a serialized model; NULL on failure with a message in error[error_size]. */
typedef fstore_spm* (*fstore_spm_load_fn)(const char* data, size_t size, char* error, size_t error_size);
typedef void (*fstore_spm_free_fn)(fstore_spm* model);
/* Encodes UTF-8 text to ids into a malloc'ed array (*ids, *count; free with
 * fstore_spm_free_ids). Returns 0, or -1 with a message in error[error_size]. */
typedef int (*fstore_spm_encode_fn)(const fstore_spm* model, const char* text, size_t size, int** ids,
                                    size_t* count, char* error, size_t error_size);
typedef void (*fstore_spm_free_ids_fn)(int* ids);
/* Id of a piece (the unk id when it is not in the vocab). */
typedef int (*fstore_spm_piece_to_id_fn)(const fstore_spm* model, const char* piece, size_t size);
/* Id of a special token (enum fstore_spm_special); -1 when the model has none. */
typedef int (*fstore_spm_special_id_fn)(const fstore_spm* model, int which);
typedef int (*fstore_spm_vocab_size_fn)(const fstore_spm* model);

#ifdef __cplusplus
}
#endif

#endif
