/* test_nccl_transport.c — the NCCL data plane between two ranks on two
 * GPUs (one thread per rank, one process): messages of several sizes
 * arrive intact, and a receive that asks for another (sid, seq) than the
 * one sent does not get it. Needs two CUDA
 * devices (NCCL refuses two ranks on one GPU): exits 77, SKIPPED,
 * otherwise. Label: gpu. */
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/transport.h"

static uint8_t g_id[128];
static int g_fail;
static size_t SIZES[] = {0, 1, 4096, 3u << 20};

static void *rank_main(void *arg) {
    int rank = (int)(intptr_t)arg;
    tc_transport *t;
    if (tc_transport_nccl_open(&t, g_id, rank, rank, 60) != TC_OK) {
        printf("FAIL rank %d open: %s\n", rank, tc_error_get());
        g_fail++;
        return NULL;
    }
    for (int k = 0; k < 4; k++) {
        size_t n = SIZES[k];
        if (rank == 0) {
            uint8_t *b = malloc(n + 1);
            for (size_t i = 0; i < n; i++) b[i] = (uint8_t)(i * 7 + k);
            if (t->send(t, 10 + k, 1, b, n, 10) != TC_OK) printf("FAIL send %d: %s\n", k, tc_error_get()), g_fail++;
            free(b);
        } else {
            void *b;
            size_t l;
            if (t->recv(t, 10 + k, 1, &b, &l, 10) != TC_OK) {
                printf("FAIL recv %d: %s\n", k, tc_error_get());
                g_fail++;
                continue;
            }
            int ok = l == n;
            for (size_t i = 0; ok && i < n; i++) ok = ((uint8_t *)b)[i] == (uint8_t)(i * 7 + k);
            if (!ok) printf("FAIL message %d corrupted (%zu bytes, want %zu)\n", k, l, n), g_fail++;
            free(b);
        }
    }
    /* out of step: rank 1 asks for seq 2, rank 0 sends seq 1 */
    if (rank == 0) t->send(t, 99, 1, "x", 1, 10);
    else {
        void *b;
        size_t l;
        if (t->recv(t, 99, 2, &b, &l, 2) != TC_ERR_IO) printf("FAIL out-of-step receive accepted\n"), g_fail++;
    }
    t->free(t);
    return NULL;
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 2) {
        printf("SKIPPED: the NCCL transport test needs 2 CUDA devices (found %d)\n", n);
        return 77;
    }
    if (tc_transport_nccl_id(g_id) != TC_OK) {
        printf("FAIL id: %s\n", tc_error_get());
        return 1;
    }
    pthread_t th[2];
    for (int r = 0; r < 2; r++) pthread_create(&th[r], NULL, rank_main, (void *)(intptr_t)r);
    for (int r = 0; r < 2; r++) pthread_join(th[r], NULL);
    printf(g_fail ? "nccl transport: %d failures\n" : "nccl transport: all checks passed\n", g_fail);
    return g_fail ? 1 : 0;
}
