/* cmd_client.c — `tconst client`: a C gRPC client of tconstd (through
 * daemon/rpc.h, the one module that calls grpc_*), for humans and
 * scripts: generate, session open/append/generate/get/close, interactive
 * stream, info, health. Exit codes: 0 ok, 1 RPC error (the status is
 * printed), 2 usage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/rpc.h"
#include "cli.h"
#include "health.pb-c.h"
#include "tconst.pb-c.h"

#define M "/tconst.v1.TConst/"

typedef struct {
    const char *server, *tokens, *text, *id, *copy_from;
    int64_t n, top_k, logprobs;
    uint64_t seed;
    double temp, top_p, timeout;
    int ignore_eos, have_n, have_temp, have_top_k, have_top_p, have_seed, have_logprobs;
    int32_t *ids;
    int64_t n_ids;
    char *stop[64]; /* --stop, in order (the server takes at most 64) */
    int n_stop;
    int32_t *stop_ids; /* --stop-ids */
    int64_t n_stop_ids;
} opts;

static const char *STATUS[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                               "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                               "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                               "UNAUTHENTICATED"};

static int rpc_fail(const tc_rpc_result *r) {
    fprintf(stderr, "tconst client: %s: %s\n", r->code >= 0 && r->code <= 16 ? STATUS[r->code] : "?", r->message);
    return 1;
}

static void usage(void) {
    printf("usage: tconst client <command> [--server ADDR] [options]   (default server 127.0.0.1:50051)\n"
           "  generate (--tokens \"ids\" | --text T) [-n N] [--session ID] [sampling]  stream a generation\n"
           "  session open [--id ID] [--copy-from ID] [--tokens|--text]   open a session (prints its id);\n"
           "                             --copy-from: it starts with that session's history (a fork)\n"
           "  session append --id ID (--tokens|--text)     add context without generating\n"
           "  session generate --id ID [--tokens|--text] [-n N] [sampling]\n"
           "  session get --id ID | session close --id ID\n"
           "  session snapshot --id ID   the session's token history, ids on one line (OpenSession with\n"
           "                             them rebuilds it)\n"
           "  stream [-n N] [sampling]   interactive: each stdin line is appended (\"ids: 1 2 3\" for ids,\n"
           "                             else text) and N tokens are generated; one session per stream\n"
           "  info                       ModelInfo and ServerInfo\n"
           "  health                     grpc.health.v1 Check\n"
           "sampling: --temperature T --top-k K --top-p P --seed S --ignore-eos; --timeout SECONDS (deadline)\n"
           "  --logprobs N (0..20): each token's log-probability and the N most likely on stderr, a line a\n"
           "  token: \"logprob ID LP ID:LP ...\"\n"
           "  --stop S (repeatable, up to 64: the text ends before S; in bash $'\\n' gives a newline)\n"
           "  --stop-ids \"ids\" (a generation ends after any of these tokens)\n"
           "-n: tokens to generate (default: the server's, min(16, its --max-tokens)).\n"
           "generate prints ids on one line (text instead when the prompt was --text); a sampled generation\n"
           "without --seed prints the seed the server drew on stderr (\"[seed N]\"; --seed N repeats it); a\n"
           "generation that fails is said on stderr and makes the exit status 1 (stream: after the rest).\n");
}

static int parse(int argc, char **argv, int start, opts *o) {
    memset(o, 0, sizeof *o);
    o->server = "127.0.0.1:50051";
    o->n = 16;
    for (int i = start; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        tc_status st = TC_OK;
        if (!strcmp(a, "--server")) o->server = v, i++;
        else if (!strcmp(a, "--tokens")) o->tokens = v, i++;
        else if (!strcmp(a, "--text")) o->text = v, i++;
        else if (!strcmp(a, "--id") || !strcmp(a, "--session")) o->id = v, i++;
        else if (!strcmp(a, "--copy-from")) o->copy_from = v, i++;
        else if (!strcmp(a, "-n")) st = tc_cli_int("-n", v, 0, INT32_MAX, &o->n), o->have_n = 1, i++;
        else if (!strcmp(a, "--temperature")) st = tc_cli_float(a, v, 0, 1e6, &o->temp), o->have_temp = 1, i++;
        else if (!strcmp(a, "--top-k")) st = tc_cli_int(a, v, 0, INT32_MAX, &o->top_k), o->have_top_k = 1, i++;
        else if (!strcmp(a, "--top-p")) st = tc_cli_float(a, v, -1e9, 1e9, &o->top_p), o->have_top_p = 1, i++;
        else if (!strcmp(a, "--seed")) st = tc_cli_u64(a, v, &o->seed), o->have_seed = 1, i++;
        else if (!strcmp(a, "--logprobs")) st = tc_cli_int(a, v, 0, 20, &o->logprobs), o->have_logprobs = 1, i++;
        else if (!strcmp(a, "--timeout")) st = tc_cli_float(a, v, 0, 1e9, &o->timeout), i++;
        else if (!strcmp(a, "--ignore-eos")) o->ignore_eos = 1;
        else if (!strcmp(a, "--stop") && v && o->n_stop == 64) {
            fprintf(stderr, "tconst client: error: --stop: at most 64 stop strings\n");
            return 2;
        } else if (!strcmp(a, "--stop")) {
            if (v) o->stop[o->n_stop++] = (char *)v;
            i++;
        } else if (!strcmp(a, "--stop-ids")) {
            free(o->stop_ids), o->stop_ids = NULL, o->n_stop_ids = 0; /* the last --stop-ids counts */
            if (v && tc_parse_ids(v, "--stop-ids", &o->stop_ids, &o->n_stop_ids) != TC_OK)
                return tc_cli_fail("client", TC_ERR_INVALID) + 1;
            i++;
        }
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); exit(0); }
        else { fprintf(stderr, "tconst client: error: unknown flag '%s'\n", a); return 2; }
        if (st != TC_OK) return tc_cli_fail("client", st) + 1;
        if ((!strcmp(a, "--server") || !strcmp(a, "--tokens") || !strcmp(a, "--text") || !strcmp(a, "--id") ||
             !strcmp(a, "--session") || !strcmp(a, "--copy-from") || !strcmp(a, "--stop") || !strcmp(a, "--stop-ids")) &&
            !v) {
            fprintf(stderr, "tconst client: error: %s needs a value\n", a);
            return 2;
        }
    }
    if (o->tokens && o->text) { fprintf(stderr, "tconst client: error: give --tokens or --text, not both\n"); return 2; }
    if (o->tokens && tc_parse_ids(o->tokens, "--tokens", &o->ids, &o->n_ids) != TC_OK) return tc_cli_fail("client", TC_ERR_INVALID) + 1;
    return 0;
}

static void fill_sampling(const opts *o, Tconst__V1__SamplingParams *s) {
    tconst__v1__sampling_params__init(s);
    if (o->have_temp) s->_temperature_case = TCONST__V1__SAMPLING_PARAMS___TEMPERATURE_TEMPERATURE, s->temperature = (float)o->temp;
    if (o->have_top_k) s->_top_k_case = TCONST__V1__SAMPLING_PARAMS___TOP_K_TOP_K, s->top_k = (int32_t)o->top_k;
    if (o->have_top_p) s->_top_p_case = TCONST__V1__SAMPLING_PARAMS___TOP_P_TOP_P, s->top_p = (float)o->top_p;
    if (o->have_seed) s->_seed_case = TCONST__V1__SAMPLING_PARAMS___SEED_SEED, s->seed = o->seed;
    if (o->have_n) /* else the server's default: min(16, its --max-tokens) */
        s->_max_tokens_case = TCONST__V1__SAMPLING_PARAMS___MAX_TOKENS_MAX_TOKENS, s->max_tokens = (int32_t)o->n;
    s->ignore_eos = o->ignore_eos;
    if (o->have_logprobs) s->_logprobs_case = TCONST__V1__SAMPLING_PARAMS___LOGPROBS_LOGPROBS, s->logprobs = (int32_t)o->logprobs;
    s->stop = (char **)o->stop, s->n_stop = (size_t)o->n_stop;
    s->stop_token_ids = o->stop_ids, s->n_stop_token_ids = (size_t)o->n_stop_ids;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len) {
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b) protobuf_c_message_pack(m, b);
    return b;
}

typedef struct {
    int text, count;
    int show_seed; /* sampled without --seed: the seed the server drew goes to stderr */
    int failed;    /* a generation ended with ERROR */
    int in_stream; /* a Stream's generation: its ERROR is not the call's status, so it is said here */
} gen_state;

/* sampling that draws (temperature > 0) from a seed the server picked */
static int drawn_seed(const opts *o) { return o->have_temp && o->temp > 0 && !o->have_seed; }

/* the last message of a generation: its error (ERROR) or the drawn seed
 * on stderr */
static void gen_end(gen_state *g, const Tconst__V1__GenerateResponse *r) {
    if (r->finish_reason == TCONST__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) return;
    if (r->finish_reason == TCONST__V1__FINISH_REASON__FINISH_REASON_ERROR) {
        if (g->in_stream)
            fprintf(stderr, "tconst client: error: the generation failed: %s\n",
                    r->error && r->error[0] ? r->error : "(no message)");
        g->failed = 1;
    } else if (g->show_seed)
        fprintf(stderr, "[seed %llu]\n", (unsigned long long)r->seed);
}

static void print_gen(gen_state *g, const Tconst__V1__GenerateResponse *r) {
    if (g->text) fputs(r->text, stdout);
    else
        for (size_t i = 0; i < r->n_token_ids; i++) printf(g->count++ ? " %d" : "%d", r->token_ids[i]);
    fflush(stdout);
    /* --logprobs: a line a token on stderr, "logprob ID LP [ID:LP ...]" */
    for (size_t i = 0; i < r->n_logprobs && i < r->n_token_ids; i++) {
        const Tconst__V1__TokenLogprob *x = r->logprobs[i];
        fprintf(stderr, "logprob %d %.6g", r->token_ids[i], x->logprob);
        for (size_t k = 0; k < x->n_top_token_ids && k < x->n_top_logprobs; k++)
            fprintf(stderr, " %d:%.6g", x->top_token_ids[k], x->top_logprobs[k]);
        fputc('\n', stderr);
    }
}

static int on_gen(void *ud, const uint8_t *m, size_t len) {
    gen_state *g = ud;
    Tconst__V1__GenerateResponse *r = tconst__v1__generate_response__unpack(NULL, len, m);
    if (!r) { fprintf(stderr, "tconst client: malformed response\n"); return 1; }
    print_gen(g, r);
    gen_end(g, r);
    if (r->finish_reason != TCONST__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED && getenv("TCONST_CLIENT_VERBOSE") && r->timings)
        fprintf(stderr, "\n[finish %d, %lld tokens, ttft %.4f s, total %.4f s, sync %.4f s, seed %llu]\n",
                r->finish_reason, (long long)(r->usage ? r->usage->completion_tokens : 0),
                r->timings->time_to_first_token_seconds, r->timings->total_seconds, r->timings->sync_seconds,
                (unsigned long long)r->seed);
    tconst__v1__generate_response__free_unpacked(r, NULL);
    return 0;
}

typedef struct {
    int64_t next, length; /* offset the next chunk must start at; the session's length (first message) */
    int bad;
} snap_state;

static int on_snap(void *ud, const uint8_t *m, size_t len) {
    snap_state *g = ud;
    Tconst__V1__SnapshotSessionResponse *r = tconst__v1__snapshot_session_response__unpack(NULL, len, m);
    if (!r || r->offset != g->next) {
        fprintf(stderr, "tconst client: malformed snapshot chunk%s\n", r ? " (out of order)" : "");
        if (r) tconst__v1__snapshot_session_response__free_unpacked(r, NULL);
        g->bad = 1;
        return 1;
    }
    if (r->offset == 0) g->length = r->session ? r->session->length : -1;
    for (size_t i = 0; i < r->n_token_ids; i++) printf(g->next + (int64_t)i ? " %d" : "%d", r->token_ids[i]);
    g->next += (int64_t)r->n_token_ids;
    tconst__v1__snapshot_session_response__free_unpacked(r, NULL);
    return 0;
}

static int do_generate(tc_rpc_client *cl, const opts *o, int in_session) {
    Tconst__V1__SamplingParams sp;
    fill_sampling(o, &sp);
    uint8_t *req;
    size_t len;
    if (in_session) {
        Tconst__V1__GenerateInSessionRequest r = TCONST__V1__GENERATE_IN_SESSION_REQUEST__INIT;
        r.session_id = (char *)o->id;
        r.token_ids = o->ids;
        r.n_token_ids = (size_t)o->n_ids;
        r.text = o->text ? (char *)o->text : "";
        r.sampling = &sp;
        req = pack(&r.base, &len);
    } else {
        Tconst__V1__GenerateRequest r = TCONST__V1__GENERATE_REQUEST__INIT;
        r.session_id = o->id ? (char *)o->id : "";
        r.token_ids = o->ids;
        r.n_token_ids = (size_t)o->n_ids;
        r.text = o->text ? (char *)o->text : "";
        r.sampling = &sp;
        req = pack(&r.base, &len);
    }
    gen_state g = {o->text != NULL, 0, drawn_seed(o), 0, 0};
    tc_rpc_result res;
    tc_rpc_client_stream(cl, in_session ? M "GenerateInSession" : M "Generate", req, len, on_gen, &g, o->timeout, &res);
    free(req);
    printf("\n");
    return res.code ? rpc_fail(&res) : g.failed;
}

static int unary(tc_rpc_client *cl, const char *method, const ProtobufCMessage *rq, const ProtobufCMessageDescriptor *rd,
                 double timeout, ProtobufCMessage **out) {
    size_t len, rlen = 0;
    uint8_t *req = pack(rq, &len), *resp = NULL;
    tc_rpc_result res;
    tc_rpc_client_unary(cl, method, req, len, &resp, &rlen, timeout, &res);
    free(req);
    if (res.code) {
        free(resp);
        return rpc_fail(&res);
    }
    *out = protobuf_c_message_unpack(rd, NULL, rlen, resp ? resp : (const uint8_t *)"");
    free(resp);
    if (!*out) { fprintf(stderr, "tconst client: malformed response\n"); return 1; }
    return 0;
}

static void print_session(const Tconst__V1__SessionInfo *s) {
    printf("session %s: length %lld, windows %lld, syncs %lld, state %lld bytes%s\n", s->session_id,
           (long long)s->length, (long long)s->windows, (long long)s->syncs, (long long)s->state_bytes,
           s->busy ? ", busy" : "");
}

static int do_session(tc_rpc_client *cl, const char *sub, const opts *o) {
    ProtobufCMessage *out = NULL;
    int rc;
    if (strcmp(sub, "open") && strcmp(sub, "generate") && strcmp(sub, "append") && strcmp(sub, "get") &&
        strcmp(sub, "close") && strcmp(sub, "snapshot")) {
        fprintf(stderr, "tconst client: error: unknown session command '%s' (open, append, generate, get, close, snapshot)\n",
                sub);
        return 2;
    }
    if (!strcmp(sub, "open")) {
        Tconst__V1__OpenSessionRequest r = TCONST__V1__OPEN_SESSION_REQUEST__INIT;
        r.session_id = o->id ? (char *)o->id : "";
        r.copy_from = o->copy_from ? (char *)o->copy_from : "";
        r.token_ids = o->ids;
        r.n_token_ids = (size_t)o->n_ids;
        r.text = o->text ? (char *)o->text : "";
        if ((rc = unary(cl, M "OpenSession", &r.base, &tconst__v1__session_info__descriptor, o->timeout, &out))) return rc;
        printf("%s\n", ((Tconst__V1__SessionInfo *)out)->session_id);
    } else if (!strcmp(sub, "generate")) {
        if (!o->id) { fprintf(stderr, "tconst client: error: --id is required\n"); return 2; }
        return do_generate(cl, o, 1);
    } else if (!strcmp(sub, "snapshot")) {
        if (!o->id) { fprintf(stderr, "tconst client: error: --id is required\n"); return 2; }
        Tconst__V1__SnapshotSessionRequest r = TCONST__V1__SNAPSHOT_SESSION_REQUEST__INIT;
        r.session_id = (char *)o->id;
        size_t len;
        uint8_t *req = pack(&r.base, &len);
        snap_state g = {0, -1, 0};
        tc_rpc_result res;
        tc_rpc_client_stream(cl, M "SnapshotSession", req, len, on_snap, &g, o->timeout, &res);
        free(req);
        printf("\n");
        if (res.code) return rpc_fail(&res);
        if (g.bad) return 1;
        if (g.next != g.length) {
            fprintf(stderr, "tconst client: snapshot of %lld tokens, the session holds %lld\n", (long long)g.next,
                    (long long)g.length);
            return 1;
        }
        return 0;
    } else {
        if (!o->id) { fprintf(stderr, "tconst client: error: --id is required\n"); return 2; }
        if (!strcmp(sub, "append")) {
            Tconst__V1__AppendRequest r = TCONST__V1__APPEND_REQUEST__INIT;
            r.session_id = (char *)o->id;
            r.token_ids = o->ids;
            r.n_token_ids = (size_t)o->n_ids;
            r.text = o->text ? (char *)o->text : "";
            if ((rc = unary(cl, M "Append", &r.base, &tconst__v1__append_response__descriptor, o->timeout, &out))) return rc;
            const Tconst__V1__AppendResponse *ar = (const Tconst__V1__AppendResponse *)out;
            if (!ar->session) {
                fprintf(stderr, "tconst client: error: malformed response: an AppendResponse without its session\n");
                protobuf_c_message_free_unpacked(out, NULL);
                return 1;
            }
            print_session(ar->session);
        } else if (!strcmp(sub, "get") || !strcmp(sub, "close")) {
            Tconst__V1__GetSessionRequest r = TCONST__V1__GET_SESSION_REQUEST__INIT;
            r.session_id = (char *)o->id;
            if ((rc = unary(cl, !strcmp(sub, "get") ? M "GetSession" : M "CloseSession", &r.base,
                            &tconst__v1__session_info__descriptor, o->timeout, &out)))
                return rc;
            print_session((Tconst__V1__SessionInfo *)out);
        } else {
            fprintf(stderr, "tconst client: error: unknown session command '%s'\n", sub);
            return 2;
        }
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int do_stream(tc_rpc_client *cl, const opts *o) {
    tc_rpc_bidi *b;
    if (tc_rpc_bidi_open(cl, M "Stream", o->timeout, &b) != TC_OK) return tc_cli_fail("client", TC_ERR_IO);
    char *line = NULL; /* getline: a line of any length is one request */
    size_t line_cap = 0;
    ssize_t got;
    Tconst__V1__SamplingParams sp;
    fill_sampling(o, &sp);
    int rc = 0, skipped = 0; /* lines that could not be sent: said, skipped, and the exit status 1 */
    int failed = 0;          /* generations that ended with ERROR: said, the stream goes on, exit status 1 */
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        size_t l = (size_t)got;
        if (l && line[l - 1] == '\n') line[--l] = 0;
        if (strlen(line) != l) { /* as a bad "ids:" line: said, and skipped */
            fprintf(stderr, "tconst client: error: standard input: a line holds a NUL byte\n");
            skipped++;
            continue;
        }
        Tconst__V1__StreamRequest r = TCONST__V1__STREAM_REQUEST__INIT;
        int32_t *ids = NULL;
        int64_t n = 0;
        int is_ids = !strncmp(line, "ids:", 4);
        if (is_ids && tc_parse_ids(line + 4, "ids", &ids, &n) != TC_OK) {
            tc_cli_fail("client", TC_ERR_INVALID);
            skipped++;
            continue;
        }
        r.token_ids = ids;
        r.n_token_ids = (size_t)n;
        r.text = is_ids ? "" : line;
        r.generate = !o->have_n || o->n > 0;
        r.sampling = &sp;
        size_t len;
        uint8_t *req = pack(&r.base, &len);
        tc_status st = tc_rpc_bidi_send(b, req, len);
        free(req);
        free(ids);
        if (st != TC_OK) { rc = -1; break; } /* the stream's status below says why */
        /* read the ack, then the generation up to its finish */
        gen_state g = {!is_ids, 0, drawn_seed(o), 0, 1};
        for (;;) {
            uint8_t *m;
            size_t ml;
            tc_rpc_bidi_recv(b, &m, &ml);
            if (!m) { rc = -1; break; } /* the stream ended early: its status below says why */
            Tconst__V1__StreamResponse *sr = tconst__v1__stream_response__unpack(NULL, ml, m);
            free(m);
            if (!sr) {
                fprintf(stderr, "tconst client: malformed response\n");
                rc = 1;
                break;
            }
            int end = 0;
            if (sr->event_case == TCONST__V1__STREAM_RESPONSE__EVENT_APPENDED) {
                if (!r.generate) end = 1;
            } else if (sr->event_case == TCONST__V1__STREAM_RESPONSE__EVENT_GENERATION) {
                print_gen(&g, sr->generation);
                gen_end(&g, sr->generation);
                end = sr->generation->finish_reason != TCONST__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
            }
            tconst__v1__stream_response__free_unpacked(sr, NULL);
            if (end) break;
        }
        printf("\n");
        fflush(stdout);
        failed += g.failed;
        if (rc) break;
    }
    tc_rpc_bidi_close_send(b);
    for (;;) { /* drain to the status */
        uint8_t *m;
        size_t ml;
        tc_rpc_bidi_recv(b, &m, &ml);
        if (!m) break;
        free(m);
    }
    free(line);
    tc_rpc_result res;
    tc_rpc_bidi_finish(b, &res);
    if (res.code) return rpc_fail(&res);
    if (rc == -1) { /* an OK status does not make a cut-short reply whole */
        fprintf(stderr, "tconst client: the stream ended before the reply to a line was complete\n");
        return 1;
    }
    if (!rc && skipped)
        fprintf(stderr, "tconst client: %d line%s of standard input could not be sent (said above)\n", skipped,
                skipped == 1 ? "" : "s");
    if (!rc && failed)
        fprintf(stderr, "tconst client: %d generation%s failed (said above)\n", failed, failed == 1 ? "" : "s");
    return rc ? rc : skipped || failed;
}

static int do_info(tc_rpc_client *cl, const opts *o) {
    ProtobufCMessage *out;
    Tconst__V1__ModelInfoRequest mr = TCONST__V1__MODEL_INFO_REQUEST__INIT;
    int rc = unary(cl, M "ModelInfo", &mr.base, &tconst__v1__model_info_response__descriptor, o->timeout, &out);
    if (rc) return rc;
    Tconst__V1__ModelInfoResponse *mi = (void *)out;
    printf("model: %s (%s), %lld parameters, dtype %s, device %s\nvocab %d, d %d, heads %d, blocks %d x %d, F %d, "
           "W_oh %d, W_og %d, tokenizer %s, state %lld bytes/session\n",
           mi->model_path, mi->architecture, (long long)mi->n_params, mi->dtype, mi->device, mi->vocab_size, mi->n_embd,
           mi->n_head, mi->n_block, mi->block_inner_depth, mi->ffn_hidden, mi->history_window, mi->generate_window,
           mi->has_tokenizer ? "yes" : "no", (long long)mi->state_bytes_per_session);
    protobuf_c_message_free_unpacked(out, NULL);
    Tconst__V1__ServerInfoRequest sr = TCONST__V1__SERVER_INFO_REQUEST__INIT;
    if ((rc = unary(cl, M "ServerInfo", &sr.base, &tconst__v1__server_info_response__descriptor, o->timeout, &out))) return rc;
    Tconst__V1__ServerInfoResponse *si = (void *)out;
    printf("server: tconstd %s (%s), up %.1f s, %d sessions, %d running%s\n", si->version, si->build,
           si->uptime_seconds, si->sessions_active, si->requests_running, si->draining ? ", draining" : "");
    if (si->limits)
        printf("limits: max_sessions %d, max_queued_requests %d, max_queued_syncs %d, max_batch %d, max_tokens %d, "
               "max_session_tokens %lld, max_state_bytes %lld, idle_timeout %g s, max_message %d B, "
               "large_request_budget %lld B, stream_queue %d\n",
               si->limits->max_sessions, si->limits->max_queued_requests, si->limits->max_queued_syncs,
               si->limits->max_batch, si->limits->max_tokens, (long long)si->limits->max_session_tokens,
               (long long)si->limits->max_state_bytes,
               si->limits->idle_timeout > 0 ? si->limits->idle_timeout : (double)si->limits->idle_timeout_seconds,
               si->limits->max_message_bytes, (long long)si->limits->large_request_budget,
               si->limits->stream_queue_messages);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int do_health(tc_rpc_client *cl, const opts *o) {
    ProtobufCMessage *out;
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    int rc = unary(cl, "/grpc.health.v1.Health/Check", &r.base, &grpc__health__v1__health_check_response__descriptor,
                   o->timeout, &out);
    if (rc) return rc;
    int s = ((Grpc__Health__V1__HealthCheckResponse *)out)->status;
    printf("%s\n", s == 1 ? "SERVING" : s == 2 ? "NOT_SERVING" : "UNKNOWN");
    protobuf_c_message_free_unpacked(out, NULL);
    return s == 1 ? 0 : 1;
}

int tc_cli_client(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1], *sub = NULL;
    int start = 2;
    if (!strcmp(cmd, "session")) {
        if (argc < 3) { usage(); return 2; }
        sub = argv[2];
        start = 3;
    }
    opts o;
    int rc = parse(argc, argv, start, &o);
    if (rc) return rc;
    tc_rpc_client *cl;
    if (tc_rpc_client_open(&cl, o.server) != TC_OK) return tc_cli_fail("client", TC_ERR_IO);
    if (!strcmp(cmd, "generate")) {
        if (!o.ids && !o.text && !o.id) { fprintf(stderr, "tconst client: error: --tokens or --text is required\n"); rc = 2; }
        else rc = do_generate(cl, &o, 0);
    } else if (!strcmp(cmd, "session")) rc = do_session(cl, sub, &o);
    else if (!strcmp(cmd, "stream")) rc = do_stream(cl, &o);
    else if (!strcmp(cmd, "info")) rc = do_info(cl, &o);
    else if (!strcmp(cmd, "health")) rc = do_health(cl, &o);
    else {
        fprintf(stderr, "tconst client: error: unknown command '%s'\n", cmd);
        rc = 2;
    }
    tc_rpc_client_close(cl);
    free(o.ids);
    free(o.stop_ids);
    return rc;
}
