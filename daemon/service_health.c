/* service_health.c — grpc.health.v1.Health (Check and Watch: serving,
 * not serving while draining or with no worker pair up) and server
 * reflection (grpc.reflection.v1alpha: list services, file by filename or
 * by symbol, from the descriptors embedded at build time), written as
 * ordinary services over rpc.h. Not the tconst.v1 API: service.c. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "descriptors.h"
#include "health.pb-c.h"
#include "metrics.h"
#include "reflection.pb-c.h"
#include "service_int.h"

static Grpc__Health__V1__HealthCheckResponse__ServingStatus health_of(tc_service *s, const char *svc) {
    if (svc[0] && strcmp(svc, "tconst.v1.TConst") != 0)
        return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    const int ok = tc_service_serving(s);
    return ok ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
              : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

void tc_svc_health(ctx *c, const uint8_t *m, size_t len, int watch) {
    DECODE(Grpc__Health__V1__HealthCheckRequest, grpc__health__v1__health_check_request, rq, m, len);
    Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = health_of(c->svc, rq->service);
    if (!watch) {
        if (r.status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN)
            tc_svc_finishf(c->call, TC_GRPC_NOT_FOUND, "service: unknown service '%s'", rq->service);
        else tc_svc_reply(c->call, &r.base);
    } else {
        c->kind = K_WATCH;
        snprintf(c->session_id, sizeof c->session_id, "%s", rq->service); /* the watched service */
        tc_svc_send_msg(c->call, &r.base);
        pthread_mutex_lock(&c->svc->mu);
        atomic_fetch_add(&c->refs, 1);
        c->next_watch = c->svc->watchers;
        c->svc->watchers = c;
        pthread_mutex_unlock(&c->svc->mu);
    }
    grpc__health__v1__health_check_request__free_unpacked(rq, NULL);
}

/* The watchers are copied (and referenced) under the lock: an tc_svc_unwatch on
 * the RPC thread may relink the list meanwhile, and a walk of next_watch
 * outside the lock could skip a watcher it had referenced (its call then
 * never released at shutdown). */
static void notify_watchers(tc_service *s) {
    ctx *stack[16], **ws = stack;
    size_t n = 0, cap = sizeof stack / sizeof *stack;
    pthread_mutex_lock(&s->mu);
    for (ctx *w = s->watchers; w; w = w->next_watch) {
        if (n == cap) {
            ctx **g = malloc(2 * cap * sizeof *g);
            if (!g) break; /* out of memory: the rest hear at their next change */
            memcpy(g, ws, n * sizeof *g);
            if (ws != stack) free(ws);
            ws = g, cap *= 2;
        }
        atomic_fetch_add(&w->refs, 1);
        ws[n++] = w;
    }
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++) {
        Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
        r.status = health_of(s, ws[i]->session_id);
        tc_svc_send_msg(ws[i]->call, &r.base);
        tc_svc_ctx_unref(ws[i]);
    }
    if (ws != stack) free(ws);
}

void tc_svc_unwatch(tc_service *s, ctx *c) {
    pthread_mutex_lock(&s->mu);
    int found = 0;
    for (ctx **pp = &s->watchers; *pp; pp = &(*pp)->next_watch)
        if (*pp == c) {
            *pp = c->next_watch;
            found = 1;
            break;
        }
    pthread_mutex_unlock(&s->mu);
    if (found) tc_svc_ctx_unref(c);
}

void tc_service_end_watchers(tc_service *s) {
    pthread_mutex_lock(&s->mu);
    ctx *list = s->watchers;
    s->watchers = NULL;
    pthread_mutex_unlock(&s->mu);
    while (list) {
        ctx *nx = list->next_watch;
        tc_call_finish(list->call, TC_GRPC_UNAVAILABLE, "server shutting down");
        tc_svc_ctx_unref(list);
        list = nx;
    }
}

void tc_service_set_serving(tc_service *s, int serving, int draining) {
    pthread_mutex_lock(&s->mu);
    int changed = s->serving != serving || s->draining != draining;
    s->serving = serving;
    s->draining = draining;
    pthread_mutex_unlock(&s->mu);
    if (changed) notify_watchers(s);
}

int tc_service_serving(tc_service *s) {
    pthread_mutex_lock(&s->mu);
    int r = s->serving && !s->draining && !s->workers_down;
    pthread_mutex_unlock(&s->mu);
    return r;
}

void tc_service_set_workers_up(tc_service *s, int up) {
    pthread_mutex_lock(&s->mu);
    const int changed = s->workers_down != !up;
    s->workers_down = !up;
    pthread_mutex_unlock(&s->mu);
    if (changed) notify_watchers(s);
}

/* ---- reflection ---- */

/* A minimal protobuf wire reader over a serialized FileDescriptorProto,
 * enough to tell whether it declares a symbol: messages (nested too),
 * enums, services and their methods. */
static int pb_field(const uint8_t **p, const uint8_t *end, int *field, const uint8_t **val, size_t *len) {
    uint64_t key = 0, v = 0;
    int sh = 0;
    while (*p < end && sh < 64) {
        uint8_t b = *(*p)++;
        key |= (uint64_t)(b & 0x7f) << sh;
        sh += 7;
        if (!(b & 0x80)) break;
    }
    if (sh == 0 || sh >= 64) return 0;
    *field = (int)(key >> 3);
    int wt = (int)(key & 7);
    *val = NULL;
    *len = 0;
    if (wt == 0) {
        while (*p < end && (*(*p)++ & 0x80)) {
        }
    } else if (wt == 1 || wt == 5) {
        size_t n = wt == 1 ? 8 : 4;
        if ((size_t)(end - *p) < n) return 0;
        *p += n;
    } else if (wt == 2) {
        sh = 0;
        while (*p < end && sh < 64) {
            uint8_t b = *(*p)++;
            v |= (uint64_t)(b & 0x7f) << sh;
            sh += 7;
            if (!(b & 0x80)) break;
        }
        if (v > (uint64_t)(end - *p)) return 0;
        *val = *p;
        *len = (size_t)v;
        *p += v;
    } else return 0;
    return 1;
}

/* field 1 (name) of a message */
static size_t pb_name(const uint8_t *m, size_t n, const uint8_t **name) {
    const uint8_t *p = m, *end = m + n, *v;
    size_t l;
    int f;
    while (pb_field(&p, end, &f, &v, &l))
        if (f == 1 && v) {
            *name = v;
            return l;
        }
    *name = (const uint8_t *)"";
    return 0;
}

/* rel: the symbol without the package; kids: field numbers of nested
 * messages / enums inside a DescriptorProto (3, 4) or a file (4, 5) */
static int pb_declares(const uint8_t *m, size_t n, const char *rel, int msg_f, int enum_f, int svc_f) {
    const uint8_t *p = m, *end = m + n, *v;
    size_t l;
    int f;
    while (pb_field(&p, end, &f, &v, &l)) {
        if (!v || (f != msg_f && f != enum_f && f != svc_f)) continue;
        const uint8_t *nm;
        size_t nl = pb_name(v, l, &nm);
        if (nl == 0 || strncmp(rel, (const char *)nm, nl) != 0) continue;
        if (rel[nl] == 0) return 1;
        if (rel[nl] != '.') continue;
        if (f == msg_f && pb_declares(v, l, rel + nl + 1, 3, 4, -1)) return 1;
        if (f == svc_f) { /* Service.Method */
            const uint8_t *q = v, *qe = v + l, *mv;
            size_t ml;
            int mf;
            while (pb_field(&q, qe, &mf, &mv, &ml)) {
                const uint8_t *mn;
                size_t mnl = mv && mf == 2 ? pb_name(mv, ml, &mn) : 0;
                if (mnl && strlen(rel + nl + 1) == mnl && !strncmp(rel + nl + 1, (const char *)mn, mnl)) return 1;
            }
        }
    }
    return 0;
}

static const tc_descriptor *descriptor_for_symbol(const char *sym) {
    const tc_descriptor *d = tc_descriptor_by_symbol(sym);
    if (!d) return NULL;
    const char *rel = sym + strlen(d->package) + 1;
    return pb_declares(d->data, d->len, rel, 4, 5, 6) ? d : NULL;
}

void tc_svc_reflect(ctx *c, const uint8_t *m, size_t len) {
    DECODE(Grpc__Reflection__V1alpha__ServerReflectionRequest, grpc__reflection__v1alpha__server_reflection_request,
           rq, m, len);
    Grpc__Reflection__V1alpha__ServerReflectionResponse r = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ListServiceResponse ls = GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ServiceResponse sv[3];
    Grpc__Reflection__V1alpha__ServiceResponse *svp[3];
    Grpc__Reflection__V1alpha__FileDescriptorResponse fd = GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
    ProtobufCBinaryData blob;
    const char *names[3] = {"tconst.v1.TConst", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"};
    r.valid_host = rq->host;
    r.original_request = rq;
    const tc_descriptor *d = NULL;
    switch (rq->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        for (int i = 0; i < 3; i++) {
            grpc__reflection__v1alpha__service_response__init(&sv[i]);
            sv[i].name = (char *)names[i];
            svp[i] = &sv[i];
        }
        ls.service = svp;
        ls.n_service = 3;
        r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        r.list_services_response = &ls;
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        d = tc_descriptor_by_file(rq->file_by_filename);
        break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        d = descriptor_for_symbol(rq->file_containing_symbol);
        break;
    default:
        break;
    }
    if (rq->message_request_case != GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES) {
        if (d) {
            blob.data = (uint8_t *)d->data;
            blob.len = d->len;
            fd.file_descriptor_proto = &blob;
            fd.n_file_descriptor_proto = 1;
            r.message_response_case =
                GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            r.file_descriptor_response = &fd;
        } else {
            er.error_code = TC_GRPC_NOT_FOUND;
            er.error_message = rq->message_request_case ==
                                       GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME ||
                                       rq->message_request_case ==
                                           GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL
                                   ? "not found"
                                   : "unsupported request";
            r.message_response_case = GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
            r.error_response = &er;
        }
    }
    tc_svc_send_msg(c->call, &r.base);
    grpc__reflection__v1alpha__server_reflection_request__free_unpacked(rq, NULL);
    tc_svc_recv_or_defer(c);
}
