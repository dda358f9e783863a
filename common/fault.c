/* fault.c — test-only fault injection knobs from the environment. */
#include "fault.h"

#include "log.h"

#include <errno.h>
#include <stdlib.h>

tc_status tc_fault_env_count(const char *name, int64_t max, int64_t *out) {
    *out = 0;
    const char *v = getenv(name);
    if (!v || !*v) return TC_OK;
    char *end;
    errno = 0;
    const long long n = strtoll(v, &end, 10);
    if (*end || errno || n < 0 || n > max)
        return TC_FAIL(TC_ERR_INVALID, "%s '%s': expected a count 0..%lld", name, v, (long long)max);
    *out = n;
    if (n > 0) /* said once, at start-up: a production log that shows it shows a misconfiguration */
        TC_LOG(TC_LOG_WARN, "fault", "fault injection armed: %s=%lld (test-only; never set in production)", name, n);
    return TC_OK;
}
