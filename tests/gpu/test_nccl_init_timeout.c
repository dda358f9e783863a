/* test_nccl_init_timeout.c — joining the NCCL data plane gives up at its
 * deadline instead of waiting for ever for a peer that never joins (a
 * Connect that came late or was lost): the communicator is non-blocking,
 * its init polled, and aborted at the deadline. One GPU is enough: a rank
 * alone never completes its init. Checked:
 *   - no time left (timeout 0): refused at once, without touching a GPU;
 *   - rank 0 alone, 2 s: fails with TC_ERR_IO naming the cause, and the
 *     call returns (the ctest TIMEOUT catches a hang);
 *   - rank 1 alone on the same id afterwards: the same.
 * Without a CUDA device the last two report SKIPPED (exit 77). Label: gpu. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "../../worker/transport.h"

static int g_fail;

static void expect_timeout(const uint8_t id[128], int rank) {
    tc_transport *t = NULL;
    const tc_status st = tc_transport_nccl_open(&t, id, rank, 0, 2.0);
    const char *e = tc_error_get() ? tc_error_get() : "";
    if (st != TC_ERR_IO || t || !strstr(e, "not done in time")) {
        printf("FAIL rank %d alone: status %d, transport %p, error '%s' (want TC_ERR_IO, not done in time)\n", rank,
               (int)st, (void *)t, e);
        g_fail++;
        if (t) t->free(t);
    } else {
        printf("ok   rank %d alone: %s\n", rank, e);
    }
}

int main(void) {
    uint8_t id[128] = {0};
    tc_transport *t = NULL;
    if (tc_transport_nccl_open(&t, id, 0, 0, 0) != TC_ERR_IO || t) printf("FAIL timeout 0 accepted\n"), g_fail++;
    else printf("ok   timeout 0: %s\n", tc_error_get());
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        printf("SKIPPED: the NCCL init-timeout test needs a CUDA device (found %d)%s\n", n,
               g_fail ? "; and a check without one FAILED" : "");
        return g_fail ? 1 : 77;
    }
    if (tc_transport_nccl_id(id) != TC_OK) {
        printf("FAIL id: %s\n", tc_error_get());
        return 1;
    }
    expect_timeout(id, 0);
    expect_timeout(id, 1);
    printf(g_fail ? "nccl init timeout: %d failures\n" : "nccl init timeout: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
