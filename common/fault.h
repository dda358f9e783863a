/* fault.h — test-only fault injection read from the environment
 * (TC_FAULT_*): the e2e tests arm a failure a real run meets only under
 * memory pressure or a bad device. Unset or 0 in production; a value that
 * is not a count is refused at start-up, never ignored. */
#ifndef TC_FAULT_H
#define TC_FAULT_H

#include <stdint.h>

#include "status.h"

/* *out = the environment variable `name` as a count in 0..max (0 when it
 * is unset or empty); TC_ERR_INVALID naming it when it is anything else. */
tc_status tc_fault_env_count(const char *name, int64_t max, int64_t *out);

#endif
