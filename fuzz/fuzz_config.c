/* fuzz_config.c — config.json (tc_config_from_json) on arbitrary text:
 * JSON syntax, key types, ranges, the cross-key checks. An accepted config
 * must pass tc_config_validate again and name tensors without overflow. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fuzz.h"
#include "model/config.h"
#include "model/weights.h"

TC_FUZZ_QUIET_INITIALIZE()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 20) return 0;
    char *text = malloc(size + 1); /* the parser takes a C string */
    memcpy(text, data, size);
    text[size] = 0;
    tc_model_config c;
    if (tc_config_from_json(&c, text, "fuzz") == TC_OK) {
        if (tc_config_validate(&c) != TC_OK) abort(); /* accepted once, accepted again */
        if (c.head_dim * c.n_head != c.n_embd) abort();
        char name[256];
        int layers = c.n_block * c.inner_depth;
        for (int li = 0; li < layers && li < 4; li++) tc_layer_tensor_name(&c, li, "attn.wq", name, sizeof name);
    }
    free(text);
    return 0;
}
