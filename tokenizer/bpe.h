/* bpe.h — GPT-2 byte-level BPE: load, encode, decode, stream decode.
 *
 * Byte-exact with the npm package gpt-3-encoder 1.1.4 (the reference the
 * tests run under node), quirks included: its rank table is keyed by the
 * string "a,b", so a few pairs that stringify alike share a rank (see
 * docs/tokenizer.md). Encode works on raw bytes and is lossless:
 * decode(encode(x)) == x for every byte string, ill-formed UTF-8 included.
 * Special tokens are not special: "<|endoftext|>" in the text is encoded as
 * text, as gpt-3-encoder does; a caller adds eos by id.
 *
 * A tc_bpe is read-only after load except for its bounded word cache, which
 * is locked internally, so one tc_bpe may encode and decode from many
 * threads at once. Not the model-directory parser (model/config.c). */
#ifndef TC_TOKENIZER_BPE_H
#define TC_TOKENIZER_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tokenizer/utf8.h"

typedef struct tc_bpe tc_bpe;

/* 1 when model_dir holds a tokenizer (vocab.json + merges.txt, or
 * encoder.json + vocab.bpe), else 0. */
int tc_bpe_exists(const char *model_dir);

/* Loads and validates the tokenizer of model_dir. Returns
 *   TC_ERR_UNSUPPORTED  neither file pair exists: the model is ids-only;
 *   TC_ERR_IO           a file exists but cannot be read;
 *   TC_ERR_INVALID      a file is malformed; tc_error_get() names the file
 *                       and the line (merges) or key (vocab). */
tc_status tc_bpe_load(tc_bpe **out, const char *model_dir);
/* Same, from explicit paths (vocab.json-like, merges.txt-like). */
tc_status tc_bpe_load_files(tc_bpe **out, const char *vocab_path, const char *merges_path);
void tc_bpe_free(tc_bpe *bpe);

int32_t tc_bpe_vocab_size(const tc_bpe *bpe);
/* Longest token in bytes (for sizing stream buffers). */
size_t tc_bpe_max_token_len(const tc_bpe *bpe);
/* The bytes of one token, or NULL for an id out of range. */
const uint8_t *tc_bpe_token_bytes(const tc_bpe *bpe, int32_t id, size_t *len);

/* text[0..len) -> *ids (malloc'd, caller frees; never NULL on success). */
tc_status tc_bpe_encode(tc_bpe *bpe, const char *text, size_t len, int32_t **ids, size_t *n);

/* ids -> the exact bytes (malloc'd, NUL-terminated for convenience; *len
 * excludes the NUL). TC_ERR_INVALID names the first id out of range. */
tc_status tc_bpe_decode(const tc_bpe *bpe, const int32_t *ids, size_t n, char **out, size_t *len);

/* Streaming detokenizer. A plain value: copying it forks the stream.
 * push emits only complete, valid UTF-8 and holds back at most 3 bytes of a
 * character split across tokens; a byte sequence that can never complete
 * is emitted as U+FFFD, one per maximal subpart (the WHATWG rule, as
 * TextDecoder in gpt-3-encoder's decode). So the concatenation of all push
 * and flush output equals tc_utf8_sanitize(tc_bpe_decode(ids)). */
typedef struct {
    const tc_bpe *bpe;
    tc_utf8_stream utf8;
} tc_bpe_stream;

void tc_bpe_stream_init(tc_bpe_stream *s, const tc_bpe *bpe);
/* Room one push needs in the worst case. */
size_t tc_bpe_stream_max_out(const tc_bpe *bpe);
/* Writes to out[0..cap) and sets *n_out (possibly 0). TC_ERR_INVALID for an
 * id out of range or cap below tc_bpe_stream_max_out; the stream is then
 * unchanged. */
tc_status tc_bpe_stream_push(tc_bpe_stream *s, int32_t id, char *out, size_t cap, size_t *n_out);
/* The tokens after which text streamed through tc_bpe_stream can first
 * hold one of the stop strings stop[0..n_stop): token t is one when, for
 * some byte of t equal to a stop string's last byte, t's bytes up to it and
 * that stop string are one a suffix of the other (the occurrence ends in t,
 * begun in t or before). A necessary condition, so a generation that stops
 * sampling after any candidate never passes the token that completes a
 * stop string; ids past the vocabulary (text U+FFFD) are never one. Sound
 * only for stop strings that are well-formed UTF-8 without U+FFFD (the
 * stream copies such text verbatim): for any other, returns -1. Writes the
 * ids ascending to out and returns their number, or -2 when there are more
 * than cap. */
int tc_bpe_stop_candidates(const tc_bpe *bpe, const char *const *stop, int n_stop, int32_t *out, int cap);
/* End of text: writes U+FFFD (3 bytes) if a character was left incomplete,
 * returns the bytes written, resets the stream. out has room for 3. */
size_t tc_bpe_stream_flush(tc_bpe_stream *s, char *out);

#endif
