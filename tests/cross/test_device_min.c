/* Device-side tests without Criterion and without a server, for cross
 * builds: one executable, exit code 0 when every check passes (1
 * otherwise), one line per check on stdout. It runs natively and, in a
 * cross build, under qemu through the cross file's exe_wrapper (see
 * deploy/cross/README.md).
 *
 * Covered: the example store (open, add, count, shuffled iteration), the
 * envelope codec (encode/decode round trip), the WebSocket client's opening
 * handshake and framing through its sans-I/O API, shoal_train_local on a
 * tiny logistic regression (compared with a gradient step computed here by
 * hand), and the deterministic test port. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/envelope.h"
#include "shoal/model.h"
#include "shoal/port.h"
#include "shoal/port_test.h"
#include "shoal/store.h"
#include "shoal/train.h"
#include "shoal/ws.h"

static int failures;
static int checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                 \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_OK(call)                                                                             \
    do {                                                                                           \
        shoal_err check_err_ = (call);                                                             \
        checks++;                                                                                  \
        if (check_err_ != SHOAL_OK) {                                                              \
            failures++;                                                                            \
            printf("FAIL %s:%d: %s -> %s (%s)\n", __FILE__, __LINE__, #call,                       \
                   shoal_strerror(check_err_), ei.msg);                                            \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* ---- a tiny dataset: three hand-placed classes ------------------------------ */

enum { FEATURES = 4, CLASSES = 3, EXAMPLES = 12 };

static void example_features(int i, float *x)
{
    /* Distinct, exactly representable values; class i % 3. */
    for (int f = 0; f < FEATURES; f++)
        x[f] = (float)((i % CLASSES) == f % CLASSES ? 1.0 : 0.0) +
               0.125f * (float)((i * 7 + f * 3) % 5) - 0.25f;
}

/* ---- example store ------------------------------------------------------- */

static char store_path[256];
static float store_x[EXAMPLES * FEATURES];
static int32_t store_y[EXAMPLES];

static void test_store(void)
{
    shoal_errinfo ei = {0};
    const char *dir = getenv("TMPDIR");
    snprintf(store_path, sizeof store_path, "%s/shoal-test-device-min-%ld.db", dir ? dir : "/tmp",
             (long)getpid());
    CHECK_OK(shoal_store_destroy(store_path, &ei));

    shoal_store *st = NULL;
    CHECK_OK(shoal_store_open(store_path, NULL, &st, &ei));
    for (int i = 0; i < EXAMPLES; i++) {
        float x[FEATURES];
        example_features(i, x);
        shoal_example e = {.features = x,
                           .feature_count = FEATURES,
                           .label = i % CLASSES,
                           .timestamp_ms = 1767225600000 + i};
        CHECK_OK(shoal_store_add(st, "digits", &e, 1767225600000 + 100, &ei));
    }
    uint64_t count = 0;
    shoal_store_criteria all = {0};
    CHECK_OK(shoal_store_count(st, &all, &count, &ei));
    CHECK(count == EXAMPLES);

    /* Iterate in batches of 5: every example comes back exactly once, bit
     * for bit, with its label. */
    shoal_store_criteria crit = {.collection = "digits"};
    shoal_store_iter *it = NULL;
    CHECK_OK(shoal_store_iter_new(st, &crit, 42, &it, &ei));
    CHECK(shoal_store_iter_size(it) == EXAMPLES);
    CHECK(shoal_store_iter_feature_count(it) == FEATURES);
    int seen[EXAMPLES] = {0};
    size_t got = 0;
    float bx[5 * FEATURES];
    int32_t by[5];
    int64_t bts[5];
    for (;;) {
        shoal_store_batch b = {.x = bx, .y = by, .timestamp_ms = bts};
        shoal_err err = shoal_store_iter_next(it, 5, &b, &ei);
        if (err == SHOAL_DONE)
            break;
        if (err != SHOAL_ROW) {
            shoal_store_iter_free(it);
            shoal_store_close(st);
            CHECK(err == SHOAL_ROW);
        }
        for (size_t k = 0; k < b.count; k++) {
            int i = (int)(bts[k] - 1767225600000);
            float want[FEATURES];
            if (i < 0 || i >= EXAMPLES)
                break;
            example_features(i, want);
            if (memcmp(want, bx + k * FEATURES, sizeof want) == 0 && by[k] == i % CLASSES)
                seen[i]++;
            /* Keep them in the store's shuffled order for training. */
            memcpy(store_x + got * FEATURES, bx + k * FEATURES, sizeof want);
            store_y[got] = by[k];
            got++;
        }
    }
    shoal_store_iter_free(it);
    shoal_store_close(st);
    CHECK(got == EXAMPLES);
    for (int i = 0; i < EXAMPLES; i++)
        CHECK(seen[i] == 1);
    CHECK_OK(shoal_store_destroy(store_path, &ei));
    printf("ok store: open, add %d, count, iterate in shuffled batches\n", EXAMPLES);
}

/* ---- envelope codec ------------------------------------------------------ */

static void test_envelope(void)
{
    shoal_errinfo ei = {0};
    static uint8_t token[] = "population-token-0123456789";
    Shoal__TensorEncoding encodings[1] = {SHOAL__TENSOR_ENCODING__TENSOR_ENCODING_FLOAT32_LE};
    Shoal__Capabilities caps = SHOAL__CAPABILITIES__INIT;
    caps.has_max_model_bytes = 1;
    caps.max_model_bytes = 1u << 20;
    caps.n_encodings = 1;
    caps.encodings = encodings;
    Shoal__CheckIn c = SHOAL__CHECK_IN__INIT;
    c.capabilities = &caps;
    c.has_protocol_version = 1;
    c.protocol_version = SHOAL_PROTOCOL_VERSION;
    c.population = "keyboard";
    c.has_auth_token = 1;
    c.auth_token.data = token;
    c.auth_token.len = sizeof token - 1;
    c.sdk_version = "shoal-device cross";
    Shoal__Envelope env = SHOAL__ENVELOPE__INIT;
    env.body_case = SHOAL__ENVELOPE__BODY_CHECK_IN;
    env.check_in = &c;

    shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    uint8_t *wire = NULL, *wire2 = NULL;
    size_t wire_len = 0, wire2_len = 0;
    CHECK_OK(shoal_envelope_encode(&codec, &env, &wire, &wire_len, &ei));
    shoal_envelope *back = NULL;
    shoal_err err = shoal_envelope_decode(&codec, wire, wire_len, &back, &ei);
    if (err != SHOAL_OK)
        shoal_free(wire);
    CHECK_OK(err);
    int same = back->body_case == SHOAL__ENVELOPE__BODY_CHECK_IN && back->check_in &&
               back->check_in->protocol_version == SHOAL_PROTOCOL_VERSION &&
               strcmp(back->check_in->population, "keyboard") == 0 &&
               back->check_in->auth_token.len == sizeof token - 1 &&
               memcmp(back->check_in->auth_token.data, token, sizeof token - 1) == 0 &&
               strcmp(shoal_envelope_body_name(back), "CheckIn") == 0;
    err = shoal_envelope_encode(&codec, back, &wire2, &wire2_len, &ei);
    int same_bytes = err == SHOAL_OK && wire2_len == wire_len && memcmp(wire, wire2, wire_len) == 0;
    shoal_envelope_free(back);
    shoal_free(wire);
    shoal_free(wire2);
    CHECK(same);
    CHECK(same_bytes);

    /* A truncated message is refused, not misread. */
    CHECK(shoal_envelope_decode(&codec, (const uint8_t *)"\x0a\x7f\x01", 3, &back, &ei) ==
          SHOAL_EPROTO);
    CHECK(back == NULL);
    printf("ok envelope: CheckIn encode/decode round trip (%zu bytes), truncation refused\n",
           wire_len);
}

/* ---- WebSocket client, sans I/O ------------------------------------------ */

static shoal_err counter_random(void *ctx, uint8_t *buf, size_t len)
{
    uint8_t *next = ctx;
    for (size_t i = 0; i < len; i++)
        buf[i] = (*next)++;
    return SHOAL_OK;
}

static void test_ws(void)
{
    shoal_errinfo ei = {0};
    /* RFC 6455 §1.3's sample nonce, key and accept value. */
    char accept[SHOAL_WS_ACCEPT_LEN + 1];
    CHECK_OK(shoal_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", accept));
    CHECK(strcmp(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);

    uint8_t next = 0x10;
    shoal_ws_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.host = "fl.example.com";
    cfg.path = SHOAL_PROTOCOL_WS_PATH;
    memcpy(cfg.key_nonce, "the sample nonce", 16);
    cfg.random = counter_random;
    cfg.random_ctx = &next;
    shoal_ws *ws = NULL;
    CHECK_OK(shoal_ws_new(&cfg, &ws, &ei));

    size_t n = 0;
    const uint8_t *out = shoal_ws_pending(ws, &n);
    char request[1024];
    int req_ok = out && n < sizeof request;
    if (req_ok) {
        memcpy(request, out, n);
        request[n] = '\0';
        static const char request_line[] = "GET " SHOAL_PROTOCOL_WS_PATH " HTTP/1.1\r\n";
        req_ok = strncmp(request, request_line, sizeof request_line - 1) == 0 &&
                 strstr(request, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") &&
                 strstr(request, "\r\nHost: fl.example.com\r\n") &&
                 strcmp(request + n - 4, "\r\n\r\n") == 0;
    }
    if (!req_ok || shoal_ws_consume(ws, n) != SHOAL_OK) {
        shoal_ws_free(ws);
        CHECK(req_ok);
        CHECK(0);
    }

    /* The 101 answer, then a binary message in the same read. */
    static const char response[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                   "Upgrade: websocket\r\n"
                                   "Connection: Upgrade\r\n"
                                   "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                   "\r\n"
                                   "\x82\x03"
                                   "abc";
    const uint8_t *in = (const uint8_t *)response;
    size_t left = sizeof response - 1, used = 0;
    shoal_ws_event ev;
    shoal_err e1 = shoal_ws_feed(ws, in, left, &used, &ev, &ei);
    int open_ok = e1 == SHOAL_ROW && ev.kind == SHOAL_WS_EVENT_OPEN &&
                  shoal_ws_get_state(ws) == SHOAL_WS_OPEN && shoal_ws_http_status(ws) == 101;
    in += used;
    left -= used;
    shoal_err e2 = shoal_ws_feed(ws, in, left, &used, &ev, &ei);
    int msg_ok = e2 == SHOAL_ROW && ev.kind == SHOAL_WS_EVENT_BINARY && ev.len == 3 &&
                 memcmp(ev.data, "abc", 3) == 0 && used == left;

    /* A message sent: FIN+binary, masked with the next 4 random bytes. */
    uint8_t mask[4] = {next, (uint8_t)(next + 1), (uint8_t)(next + 2), (uint8_t)(next + 3)};
    shoal_err e3 = shoal_ws_send_binary(ws, (const uint8_t *)"hi!", 3, &ei);
    out = shoal_ws_pending(ws, &n);
    int frame_ok = e3 == SHOAL_OK && out && n == 2 + 4 + 3 && out[0] == 0x82 && out[1] == 0x83 &&
                   memcmp(out + 2, mask, 4) == 0 && (out[6] ^ mask[0]) == 'h' &&
                   (out[7] ^ mask[1]) == 'i' && (out[8] ^ mask[2]) == '!';
    shoal_ws_free(ws);
    CHECK(open_ok);
    CHECK(msg_ok);
    CHECK(frame_ok);
    printf(
        "ok ws: RFC 6455 sample accept key, upgrade request, 101, message in, masked frame out\n");
}

/* ---- shoal_train_local vs. a hand-computed gradient step ------------------ */

/* One full-batch SGD step of softmax regression, written out from the
 * definition: grad W[c][f] = mean_i (p_ic - [y_i = c]) x_if, grad b[c] =
 * mean_i (p_ic - [y_i = c]). */
static void reference_step(double *w, double *b, const float *x, const int32_t *y, size_t count,
                           double lr)
{
    double gw[CLASSES][FEATURES] = {{0}}, gb[CLASSES] = {0};
    for (size_t i = 0; i < count; i++) {
        double z[CLASSES], zmax = -INFINITY, sum = 0;
        for (int c = 0; c < CLASSES; c++) {
            z[c] = b[c];
            for (int f = 0; f < FEATURES; f++)
                z[c] += w[c * FEATURES + f] * x[i * FEATURES + f];
            if (z[c] > zmax)
                zmax = z[c];
        }
        for (int c = 0; c < CLASSES; c++)
            sum += exp(z[c] - zmax);
        for (int c = 0; c < CLASSES; c++) {
            double d = exp(z[c] - zmax) / sum - (y[i] == c ? 1.0 : 0.0);
            gb[c] += d / (double)count;
            for (int f = 0; f < FEATURES; f++)
                gw[c][f] += d * x[i * FEATURES + f] / (double)count;
        }
    }
    for (int c = 0; c < CLASSES; c++) {
        b[c] -= lr * gb[c];
        for (int f = 0; f < FEATURES; f++)
            w[c * FEATURES + f] -= lr * gw[c][f];
    }
}

static void test_train(void)
{
    shoal_errinfo ei = {0};
    (void)ei;
    shoal_model *m = NULL;
    CHECK_OK(shoal_model_new(SHOAL_MODEL_LOGREG, (shoal_shape){FEATURES, 1, 1}, CLASSES, &m));
    size_t pc = shoal_model_param_count(m);
    const shoal_param_info *wi = NULL, *bi = NULL;
    for (size_t t = 0; t < shoal_model_tensor_count(m); t++) {
        const shoal_param_info *p = shoal_model_tensor(m, t);
        if (p->rank == 2)
            wi = p;
        else if (p->rank == 1)
            bi = p;
    }
    int layout_ok = pc == CLASSES * FEATURES + CLASSES && wi && bi &&
                    wi->count == CLASSES * FEATURES && wi->shape[0] == CLASSES &&
                    wi->shape[1] == FEATURES && bi->count == CLASSES;
    if (!layout_ok)
        shoal_model_free(m);
    CHECK(layout_ok);

    float global[CLASSES * FEATURES + CLASSES], delta[CLASSES * FEATURES + CLASSES];
    shoal_model_init_params(m, 3, global);
    shoal_dataset ds = {.count = EXAMPLES,
                        .features = FEATURES,
                        .shape = {FEATURES, 1, 1},
                        .classes = CLASSES,
                        .x = store_x,
                        .y = store_y};
    shoal_train_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.epochs = 3;
    cfg.batch = EXAMPLES; /* full batch: the shuffle cannot change the step */
    cfg.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.5f);
    shoal_train_result res;
    shoal_err err = shoal_train_local(m, global, &ds, NULL, 0, &cfg, 7, delta, &res);
    /* Same inputs, same seed: the same delta bit for bit. */
    float again[CLASSES * FEATURES + CLASSES];
    shoal_err err2 = shoal_train_local(m, global, &ds, NULL, 0, &cfg, 7, again, NULL);
    size_t w_off = wi->offset, b_off = bi->offset;
    shoal_model_free(m);
    CHECK(err == SHOAL_OK && err2 == SHOAL_OK);
    CHECK(memcmp(delta, again, sizeof delta) == 0);
    CHECK(res.example_count == EXAMPLES && res.steps == 3 && res.epochs_done == 3);

    double w[CLASSES * FEATURES], b[CLASSES];
    for (int k = 0; k < CLASSES * FEATURES; k++)
        w[k] = global[w_off + k];
    for (int c = 0; c < CLASSES; c++)
        b[c] = global[b_off + c];
    for (int e = 0; e < 3; e++)
        reference_step(w, b, store_x, store_y, EXAMPLES, 0.5);
    double worst = 0, moved = 0;
    for (int k = 0; k < CLASSES * FEATURES; k++) {
        double want = w[k] - global[w_off + k];
        worst = fmax(worst, fabs(want - delta[w_off + k]));
        moved = fmax(moved, fabs(want));
    }
    for (int c = 0; c < CLASSES; c++) {
        double want = b[c] - global[b_off + c];
        worst = fmax(worst, fabs(want - delta[b_off + c]));
    }
    CHECK(moved > 1e-2); /* training did something */
    CHECK(worst < 1e-5);
    printf("ok train: logreg %dx%d, 3 full-batch SGD steps, |delta - reference| <= %.2g\n",
           FEATURES, CLASSES, worst);
}

/* ---- the deterministic test port ----------------------------------------- */

static void test_port(void)
{
    shoal_errinfo ei = {0};
    shoal_test_port a, b;
    shoal_port pa, pb;
    shoal_test_port_init(&a);
    shoal_test_port_init(&b);
    a.monotonic_step_ms = 5;
    a.charging_flip_after = 2;
    a.charging_after = 0;
    shoal_test_port_bind(&a, &pa);
    shoal_test_port_bind(&b, &pb);
    CHECK_OK(shoal_port_check(&pa, &ei));

    int64_t t1 = pa.monotonic_ms(pa.ctx), t2 = pa.monotonic_ms(pa.ctx);
    CHECK(t2 - t1 == 5);
    uint8_t ra[32], rb[32];
    CHECK_OK(pa.random(pa.ctx, ra, sizeof ra));
    CHECK_OK(pb.random(pb.ctx, rb, sizeof rb));
    CHECK(memcmp(ra, rb, sizeof ra) == 0); /* same seed, same bytes */
    b.seed = 2;
    shoal_test_port_bind(&b, &pb);
    CHECK_OK(pb.random(pb.ctx, rb, sizeof rb));
    CHECK(memcmp(ra, rb, sizeof ra) != 0);

    int c1 = pa.charging(pa.ctx), c2 = pa.charging(pa.ctx), c3 = pa.charging(pa.ctx);
    CHECK(c1 == 1 && c2 == 1 && c3 == 0 && a.charging_polls == 3);
    shoal_port_conn *conn = NULL;
    CHECK(pa.connect(pa.ctx, "fl.example.com", 443, &conn, &ei) == SHOAL_EIO);
    CHECK(a.connects == 1);
    shoal_test_port_fini(&a);
    shoal_test_port_fini(&b);
    printf("ok port: clock steps, seeded random, charging flip, connect without transport\n");
}

int main(void)
{
    test_store();
    test_envelope();
    test_ws();
    test_train();
    test_port();
    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
