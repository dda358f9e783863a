/* safetensors.h — a validating, mmap-backed reader for .safetensors files.
 *
 * Layout: u64 little-endian header length n, n bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {...}}, then the data section. Everything is checked
 * before any tensor is handed out: header length within the file, JSON
 * well-formed, known dtype, shape product * dtype size == e - b, offsets
 * within the data section, no two tensors overlapping, no bytes past the
 * last tensor, no tensor name twice (nor a \u0000 in one), nothing but
 * space padding after the header's object. tc_st_write (below) is the
 * small writer of `tconst init-model`. */
#ifndef TC_SAFETENSORS_H
#define TC_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { TC_DT_F32 = 0, TC_DT_F16, TC_DT_BF16, TC_DT_OTHER } tc_dtype;

#define TC_ST_MAX_DIMS 8

typedef struct {
    char *name;
    tc_dtype dtype;
    char dtype_name[16];
    int n_dims;
    int64_t shape[TC_ST_MAX_DIMS];
    int64_t n_elem;
    const uint8_t *data; /* points into the mapping */
    size_t nbytes;
} tc_st_tensor;

typedef struct {
    void *map;
    size_t map_size;
    int n_tensors;
    tc_st_tensor *tensors;   /* in header order */
    tc_st_tensor **by_name;  /* sorted by name, for tc_st_find */
} tc_st_file;

size_t tc_dtype_size(tc_dtype dt);
const char *tc_dtype_name(tc_dtype dt);

/* Opens and validates; on failure sets tc_error with the path and reason. */
tc_status tc_st_open(tc_st_file *f, const char *path);
tc_status tc_st_parse(tc_st_file *f, const uint8_t *buf, size_t size, const char *label);
void tc_st_close(tc_st_file *f);
const tc_st_tensor *tc_st_find(const tc_st_file *f, const char *name);

/* Converts n elements of F32/F16/BF16 into fp32. */
void tc_convert_to_f32(float *dst, const uint8_t *src, tc_dtype dt, size_t n);
uint16_t tc_f32_to_f16(float f);
float tc_f16_to_f32(uint16_t h);
uint16_t tc_f32_to_bf16(float f);
float tc_bf16_to_f32(uint16_t h);

/* Writer: tensors in the given order, fp32 input converted to `dt`. */
typedef struct {
    const char *name;
    const float *data;
    int n_dims;
    int64_t shape[TC_ST_MAX_DIMS];
} tc_st_out;
tc_status tc_st_write(const char *path, const tc_st_out *ts, int n, tc_dtype dt);

#endif
