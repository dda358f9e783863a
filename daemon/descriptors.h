/* descriptors.h — the serialized FileDescriptorProtos of the files in proto/,
 * embedded at build time (cmake/embed_descriptors.cmake), for server
 * reflection. */
#ifndef TC_DAEMON_DESCRIPTORS_H
#define TC_DAEMON_DESCRIPTORS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *file;    /* "tconst.proto" */
    const char *package; /* "tconst.v1" */
    const uint8_t *data; /* FileDescriptorProto bytes */
    size_t len;
} tc_descriptor;

const tc_descriptor *tc_descriptor_by_file(const char *file);
/* The file declaring a fully qualified symbol (service, method, message). */
const tc_descriptor *tc_descriptor_by_symbol(const char *symbol);

#endif
