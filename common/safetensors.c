/* safetensors.c — validating reader and a small writer for safetensors.
 * See safetensors.h for the checks; every failure names the file and the
 * tensor or field at fault. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include "json_util.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TC_ST_MAX_HEADER (100u << 20) /* 100 MB, as the reference library */

size_t tc_dtype_size(tc_dtype dt) {
    switch (dt) {
    case TC_DT_F32: return 4;
    case TC_DT_F16: return 2;
    case TC_DT_BF16: return 2;
    default: return 0;
    }
}

const char *tc_dtype_name(tc_dtype dt) {
    switch (dt) {
    case TC_DT_F32: return "F32";
    case TC_DT_F16: return "F16";
    case TC_DT_BF16: return "BF16";
    default: return "?";
    }
}

/* Sizes of dtypes we do not compute with, so the layout can still be
 * validated (a checkpoint may carry e.g. I64 buffers we ignore). */
static int other_dtype_size(const char *s) {
    static const struct { const char *n; int sz; } t[] = {
        {"F64", 8}, {"I64", 8}, {"U64", 8}, {"I32", 4}, {"U32", 4}, {"I16", 2}, {"U16", 2},
        {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strcmp(s, t[i].n) == 0) return t[i].sz;
    return 0;
}

static int cmp_by_offset(const void *a, const void *b) {
    const tc_st_tensor *x = *(const tc_st_tensor *const *)a, *y = *(const tc_st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp((*(const tc_st_tensor *const *)a)->name, (*(const tc_st_tensor *const *)b)->name);
}

static int json_is_uint(const cJSON *j, double max) {
    return cJSON_IsNumber(j) && j->valuedouble >= 0 && j->valuedouble <= max &&
           floor(j->valuedouble) == j->valuedouble;
}

tc_status tc_st_parse(tc_st_file *f, const uint8_t *buf, size_t size, const char *label) {
    tc_status st = TC_ERR_INVALID;
    cJSON *root = NULL;
    tc_st_tensor **order = NULL;
    f->n_tensors = 0;
    f->tensors = NULL;
    f->by_name = NULL;
    if (size < 8) return TC_FAIL(TC_ERR_INVALID, "%s: file is %zu bytes, shorter than the 8-byte header length", label, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8)
        return TC_FAIL(TC_ERR_INVALID, "%s: header length %llu runs past end of file (%zu bytes)", label,
                       (unsigned long long)hlen, size);
    if (hlen > TC_ST_MAX_HEADER)
        return TC_FAIL(TC_ERR_INVALID, "%s: header length %llu exceeds the %u-byte limit", label,
                       (unsigned long long)hlen, TC_ST_MAX_HEADER);
    if (hlen < 2) return TC_FAIL(TC_ERR_INVALID, "%s: header of %llu bytes is not a JSON object", label, (unsigned long long)hlen);
    const uint8_t *data = buf + 8 + hlen;
    size_t data_size = size - 8 - hlen;
    const char *htext = (const char *)buf + 8, *hend = NULL;
    root = cJSON_ParseWithLengthOpts(htext, hlen, &hend, 0);
    if (!root || !cJSON_IsObject(root)) {
        tc_error_set("%s: header is not valid JSON object", label);
        goto fail;
    }
    /* the format pads the header with spaces; anything else after the
     * object is a damaged or concatenated header */
    if (!hend || hend < htext || !tc_json_only_space(hend, (size_t)(htext + hlen - hend))) {
        tc_error_set("%s: header has bytes after its JSON object (only space padding may follow)", label);
        goto fail;
    }
    if (tc_json_has_nul_escape(htext, hlen)) {
        tc_error_set("%s: header holds a \\u0000 escape (a tensor name cut short would shadow another)", label);
        goto fail;
    }
    int n = 0;
    for (cJSON *it = root->child; it; it = it->next)
        if (strcmp(it->string, "__metadata__") != 0) n++;
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    order = calloc(n ? (size_t)n : 1, sizeof *order);
    if (!f->tensors || !order) { st = TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", label); goto fail; }
    for (cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string;
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) { tc_error_set("%s: __metadata__ is not an object", label); goto fail; }
            continue;
        }
        tc_st_tensor *t = &f->tensors[f->n_tensors];
        if (!cJSON_IsObject(it)) { tc_error_set("%s: tensor '%s': entry is not an object", label, name); goto fail; }
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt)) { tc_error_set("%s: tensor '%s': missing or non-string dtype", label, name); goto fail; }
        if (!cJSON_IsArray(sh)) { tc_error_set("%s: tensor '%s': missing or non-array shape", label, name); goto fail; }
        if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2) {
            tc_error_set("%s: tensor '%s': data_offsets must be [begin, end]", label, name);
            goto fail;
        }
        size_t esz;
        if (strcmp(dt->valuestring, "F32") == 0) t->dtype = TC_DT_F32;
        else if (strcmp(dt->valuestring, "F16") == 0) t->dtype = TC_DT_F16;
        else if (strcmp(dt->valuestring, "BF16") == 0) t->dtype = TC_DT_BF16;
        else t->dtype = TC_DT_OTHER;
        esz = t->dtype == TC_DT_OTHER ? (size_t)other_dtype_size(dt->valuestring) : tc_dtype_size(t->dtype);
        if (esz == 0) { tc_error_set("%s: tensor '%s': unknown dtype '%.15s'", label, name, dt->valuestring); goto fail; }
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
        int nd = cJSON_GetArraySize(sh);
        if (nd > TC_ST_MAX_DIMS) { tc_error_set("%s: tensor '%s': %d dimensions (max %d)", label, name, nd, TC_ST_MAX_DIMS); goto fail; }
        t->n_dims = nd;
        int64_t ne = 1;
        for (int d = 0; d < nd; d++) {
            cJSON *x = cJSON_GetArrayItem(sh, d);
            if (!json_is_uint(x, 9.0e15)) { tc_error_set("%s: tensor '%s': shape[%d] is not a non-negative integer", label, name, d); goto fail; }
            t->shape[d] = (int64_t)x->valuedouble;
            if (t->shape[d] != 0 && ne > INT64_MAX / 16 / t->shape[d]) {
                tc_error_set("%s: tensor '%s': shape product overflows", label, name);
                goto fail;
            }
            ne *= t->shape[d];
        }
        t->n_elem = ne;
        cJSON *b = cJSON_GetArrayItem(off, 0), *e = cJSON_GetArrayItem(off, 1);
        if (!json_is_uint(b, 9.0e15) || !json_is_uint(e, 9.0e15)) {
            tc_error_set("%s: tensor '%s': data_offsets are not non-negative integers", label, name);
            goto fail;
        }
        uint64_t ob = (uint64_t)b->valuedouble, oe = (uint64_t)e->valuedouble;
        if (oe < ob) { tc_error_set("%s: tensor '%s': data_offsets end %llu < begin %llu", label, name, (unsigned long long)oe, (unsigned long long)ob); goto fail; }
        if (oe > data_size) {
            tc_error_set("%s: tensor '%s': data_offsets end %llu past the %zu-byte data section (truncated file?)",
                         label, name, (unsigned long long)oe, data_size);
            goto fail;
        }
        if ((uint64_t)ne * esz != oe - ob) {
            tc_error_set("%s: tensor '%s': %lld elements of %s need %llu bytes, data_offsets give %llu", label, name,
                         (long long)ne, dt->valuestring, (unsigned long long)ne * esz, (unsigned long long)(oe - ob));
            goto fail;
        }
        t->data = data + ob;
        t->nbytes = oe - ob;
        t->name = strdup(name);
        if (!t->name) { st = TC_FAIL(TC_ERR_NOMEM, "out of memory"); goto fail; }
        order[f->n_tensors] = t;
        f->n_tensors++;
    }
    /* by name: lookups are a binary search (a model of thousands of
     * tensors looked up one by one was quadratic) and duplicates adjacent */
    f->by_name = malloc((f->n_tensors ? (size_t)f->n_tensors : 1) * sizeof *f->by_name);
    if (!f->by_name) { st = TC_FAIL(TC_ERR_NOMEM, "%s: out of memory", label); goto fail; }
    memcpy(f->by_name, order, (size_t)f->n_tensors * sizeof *order);
    qsort(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, cmp_by_name);
    for (int i = 1; i < f->n_tensors; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            tc_error_set("%s: tensor '%s' appears twice in the header", label, f->by_name[i]->name);
            goto fail;
        }
    /* overlap: each tensor against the furthest end of those before it in
     * offset order (an empty tensor between two overlapping ones must not
     * hide them from each other) */
    qsort(order, (size_t)f->n_tensors, sizeof *order, cmp_by_offset);
    const tc_st_tensor *reach = NULL; /* the non-empty tensor ending furthest so far */
    for (int i = 0; i < f->n_tensors; i++) {
        const tc_st_tensor *q = order[i];
        if (q->nbytes == 0) continue;
        if (reach && reach->data + reach->nbytes > q->data) {
            tc_error_set("%s: tensors '%s' and '%s' overlap in the data section", label, reach->name, q->name);
            goto fail;
        }
        if (!reach || q->data + q->nbytes > reach->data + reach->nbytes) reach = q;
    }
    /* the reference library refuses bytes past the last tensor: a header
     * that describes less than the file holds is not the file's */
    const size_t used = reach ? (size_t)(reach->data + reach->nbytes - data) : 0;
    if (used != data_size) {
        tc_error_set("%s: the data section is %zu bytes but its tensors end at byte %zu (trailing bytes: "
                     "a damaged or mismatched header?)", label, data_size, used);
        goto fail;
    }
    free(order);
    cJSON_Delete(root);
    return TC_OK;
fail:
    free(order);
    free(f->by_name);
    f->by_name = NULL;
    cJSON_Delete(root);
    if (f->tensors) {
        for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
        free(f->tensors);
        f->tensors = NULL;
    }
    f->n_tensors = 0;
    return st;
}

tc_status tc_st_open(tc_st_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    /* non-blocking: a FIFO in the file's place must not hang the open
     * (fstat refuses it next) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return TC_FAIL(TC_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return TC_FAIL(TC_ERR_INVALID, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return TC_FAIL(TC_ERR_INVALID, "%s: file is %lld bytes, shorter than the 8-byte header length", path,
                       (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return TC_FAIL(TC_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
    f->map = m;
    f->map_size = (size_t)sb.st_size;
    tc_status st = tc_st_parse(f, m, f->map_size, path);
    if (st != TC_OK) {
        munmap(m, f->map_size);
        f->map = NULL;
    }
    return st;
}

void tc_st_close(tc_st_file *f) {
    free(f->by_name);
    if (f->tensors) {
        for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
        free(f->tensors);
    }
    if (f->map) munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

const tc_st_tensor *tc_st_find(const tc_st_file *f, const char *name) {
    int lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        const int c = strcmp(f->by_name[mid]->name, name);
        if (c == 0) return f->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- half-precision conversions (round to nearest even) ---- */

float tc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 0x1f) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tc_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

float tc_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t tc_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void tc_convert_to_f32(float *dst, const uint8_t *src, tc_dtype dt, size_t n) {
    switch (dt) {
    case TC_DT_F32: memcpy(dst, src, n * 4); break;
    case TC_DT_F16:
        for (size_t i = 0; i < n; i++) dst[i] = tc_f16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
        break;
    case TC_DT_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = tc_bf16_to_f32((uint16_t)(src[2 * i] | (src[2 * i + 1] << 8)));
        break;
    default: TC_ASSERT(0, "convert: unsupported dtype %d", (int)dt);
    }
}

tc_status tc_st_write(const char *path, const tc_st_out *ts, int n, tc_dtype dt) {
    size_t esz = tc_dtype_size(dt);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_AddObjectToObject(root, ts[i].name);
        cJSON_AddStringToObject(o, "dtype", tc_dtype_name(dt));
        cJSON *sh = cJSON_AddArrayToObject(o, "shape");
        int64_t ne = 1;
        for (int d = 0; d < ts[i].n_dims; d++) {
            cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)ts[i].shape[d]));
            ne *= ts[i].shape[d];
        }
        cJSON *of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        off += (uint64_t)ne * esz;
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
    }
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!hdr) return TC_FAIL(TC_ERR_NOMEM, "out of memory writing %s", path);
    size_t hl = strlen(hdr), pad = (8 - hl % 8) % 8; /* align data to 8 bytes */
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(hdr);
        return TC_FAIL(TC_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint64_t L = hl + pad;
    uint8_t lb[8];
    for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(L >> (8 * i));
    int ok = fwrite(lb, 1, 8, fp) == 8 && fwrite(hdr, 1, hl, fp) == hl;
    for (size_t i = 0; i < pad && ok; i++) ok = fputc(' ', fp) != EOF;
    free(hdr);
    uint8_t buf[4096];
    for (int i = 0; i < n && ok; i++) {
        int64_t ne = 1;
        for (int d = 0; d < ts[i].n_dims; d++) ne *= ts[i].shape[d];
        for (int64_t j = 0; j < ne && ok;) {
            size_t k = 0;
            for (; k + esz <= sizeof buf && j < ne; j++) {
                float v = ts[i].data[j];
                if (dt == TC_DT_F32) memcpy(buf + k, &v, 4);
                else {
                    uint16_t h = dt == TC_DT_F16 ? tc_f32_to_f16(v) : tc_f32_to_bf16(v);
                    buf[k] = (uint8_t)h;
                    buf[k + 1] = (uint8_t)(h >> 8);
                }
                k += esz;
            }
            ok = fwrite(buf, 1, k, fp) == k;
        }
    }
    if (fclose(fp) != 0) ok = 0;
    if (!ok) return TC_FAIL(TC_ERR_IO, "%s: write failed", path);
    return TC_OK;
}
