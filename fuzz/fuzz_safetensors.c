/* fuzz_safetensors.c — the safetensors reader (tc_st_parse) on arbitrary
 * bytes: header length, JSON header, dtypes, shapes, offsets. On success
 * every tensor is looked up and converted, so a header that passes
 * validation but points outside the buffer shows up under ASan. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/safetensors.h"
#include "fuzz.h"

TC_FUZZ_QUIET_INITIALIZE()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tc_st_file f;
    memset(&f, 0, sizeof f);
    if (tc_st_parse(&f, data, size, "fuzz") != TC_OK) return 0;
    float tmp[64];
    for (int i = 0; i < f.n_tensors; i++) {
        const tc_st_tensor *t = &f.tensors[i];
        if (tc_st_find(&f, t->name) == NULL) abort(); /* every listed name is found */
        size_t es = tc_dtype_size(t->dtype);
        if (t->dtype == TC_DT_OTHER || es == 0) continue;
        if ((size_t)t->n_elem * es != t->nbytes) abort(); /* validated size */
        /* the first and the last elements, the two ends of the span */
        size_t n = t->n_elem < 32 ? (size_t)t->n_elem : 32;
        tc_convert_to_f32(tmp, t->data, t->dtype, n);
        if (t->n_elem > 32) tc_convert_to_f32(tmp + 32, t->data + t->nbytes - 32 * es, t->dtype, 32);
    }
    f.map = NULL; /* the buffer is the fuzzer's, not a mapping */
    tc_st_close(&f);
    return 0;
}
