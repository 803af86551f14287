#include "shoal/auth.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

#define TOKEN_PREFIX     "v1."
#define TOKEN_PREFIX_LEN 3u
#define MAC_BYTES        crypto_auth_hmacsha256_BYTES
#define MALFORMED        "malformed token: expected v1.<device>.<mac>"

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ready;

static void init_sodium(void)
{
    sodium_ready = sodium_init() >= 0;
}

/* sodium_init is itself idempotent; the once-guard keeps its cost off the
 * check-in path and makes the ready flag a plain read afterwards. */
static shoal_err ensure_sodium(shoal_errinfo *ei)
{
    if (pthread_once(&sodium_once, init_sodium) != 0 || !sodium_ready)
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "libsodium could not be initialised");
    return SHOAL_OK;
}

static int device_char_ok(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

static int device_id_ok(const char *id, size_t len)
{
    if (len < 1 || len > SHOAL_AUTH_DEVICE_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!device_char_ok((unsigned char)id[i]))
            return 0;
    return 1;
}

/* The population name comes from the device's CheckIn; quote at most 128
 * printable bytes of it so a message stays one readable line. */
static void quote_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 4 < cap && n < 128; p++)
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
    if (name[n] != 0 && n + 4 < cap) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = 0;
}

static shoal_err refuse(shoal_errinfo *ei, const char *population)
{
    char quoted[140];
    quote_name(population, quoted, sizeof quoted);
    return shoal_errinfo_set(ei, SHOAL_EAUTH, "auth token for population '%s' is not valid",
                             quoted);
}

static shoal_err malformed(shoal_errinfo *ei, const char *why)
{
    return shoal_errinfo_set(ei, SHOAL_EAUTH, MALFORMED " (%s)", why);
}

static void compute_mac(const uint8_t *secret, size_t secret_len, const char *population,
                        const char *device_id, size_t device_len, uint8_t mac[MAC_BYTES])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, secret, secret_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)population, strlen(population));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"\n", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)device_id, device_len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st); /* holds the keyed inner and outer hash states */
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1; /* upper case too: the token form is lowercase only */
}

static shoal_err check_hmac(const uint8_t *secret, size_t secret_len, const char *population,
                            const uint8_t *token, size_t token_len, char *device_id,
                            shoal_errinfo *ei)
{
    const size_t shortest = TOKEN_PREFIX_LEN + 1 + 1 + SHOAL_AUTH_MAC_HEX_LEN;
    const size_t longest = SHOAL_AUTH_TOKEN_MAX - 1;
    if (token_len < shortest)
        return malformed(ei, "too short");
    if (token_len > longest)
        return malformed(ei, "too long");
    if (memcmp(token, TOKEN_PREFIX, TOKEN_PREFIX_LEN) != 0)
        return malformed(ei, "no 'v1.' prefix");
    /* The MAC is the last 64 characters: device ids may contain '.', hex
     * digits may not, so the split is unambiguous. */
    const size_t dot = token_len - SHOAL_AUTH_MAC_HEX_LEN - 1;
    if (token[dot] != '.')
        return malformed(ei, "no '.' before the 64-digit MAC");
    const char *id = (const char *)token + TOKEN_PREFIX_LEN;
    const size_t id_len = dot - TOKEN_PREFIX_LEN;
    if (!device_id_ok(id, id_len))
        return malformed(ei, "the device id must be 1 to 64 characters of [A-Za-z0-9._-]");
    uint8_t presented[MAC_BYTES];
    const uint8_t *hex = token + dot + 1;
    for (size_t i = 0; i < MAC_BYTES; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return malformed(ei, "the MAC must be 64 lowercase hex digits");
        presented[i] = (uint8_t)(hi << 4 | lo);
    }

    uint8_t expected[MAC_BYTES];
    compute_mac(secret, secret_len, population, id, id_len, expected);
    const int differ = sodium_memcmp(expected, presented, MAC_BYTES);
    sodium_memzero(expected, sizeof expected);
    if (differ != 0)
        return refuse(ei, population);
    if (device_id) {
        memcpy(device_id, id, id_len);
        device_id[id_len] = 0;
    }
    return SHOAL_OK;
}

shoal_err shoal_auth_check(shoal_auth_mode mode, const uint8_t *secret, size_t secret_len,
                           const char *population, const uint8_t *token, size_t token_len,
                           char device_id[SHOAL_AUTH_DEVICE_ID_MAX + 1], shoal_errinfo *ei)
{
    if (device_id)
        device_id[0] = 0;
    if (!secret || secret_len == 0 || !population || (!token && token_len > 0))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "auth check: missing secret, population or token");
    if (mode != SHOAL_AUTH_SHARED && mode != SHOAL_AUTH_HMAC)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "auth check: unknown mode %d", (int)mode);
    shoal_err err = ensure_sodium(ei);
    if (err)
        return err;

    if (mode == SHOAL_AUTH_SHARED) {
        if (token_len != secret_len)
            return refuse(ei, population);
        if (sodium_memcmp(token, secret, secret_len) != 0)
            return refuse(ei, population);
        return SHOAL_OK;
    }
    if (token_len == 0)
        return malformed(ei, "empty");
    return check_hmac(secret, secret_len, population, token, token_len, device_id, ei);
}

shoal_err shoal_auth_mint(const uint8_t *secret, size_t secret_len, const char *population,
                          const char *device_id, char *out, size_t cap, shoal_errinfo *ei)
{
    if (out && cap > 0)
        out[0] = 0;
    if (!secret || secret_len == 0 || !population || !device_id || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "auth mint: missing secret, population, device id or buffer");
    const size_t id_len = strnlen(device_id, SHOAL_AUTH_DEVICE_ID_MAX + 1);
    if (!device_id_ok(device_id, id_len))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "device id must be 1 to %u characters of [A-Za-z0-9._-]",
                                 SHOAL_AUTH_DEVICE_ID_MAX);
    const size_t need = TOKEN_PREFIX_LEN + id_len + 1 + SHOAL_AUTH_MAC_HEX_LEN + 1;
    if (cap < need)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "auth mint: the token needs %zu bytes, got %zu",
                                 need, cap);
    shoal_err err = ensure_sodium(ei);
    if (err)
        return err;

    uint8_t mac[MAC_BYTES];
    compute_mac(secret, secret_len, population, device_id, id_len, mac);
    memcpy(out, TOKEN_PREFIX, TOKEN_PREFIX_LEN);
    memcpy(out + TOKEN_PREFIX_LEN, device_id, id_len);
    out[TOKEN_PREFIX_LEN + id_len] = '.';
    sodium_bin2hex(out + TOKEN_PREFIX_LEN + id_len + 1, SHOAL_AUTH_MAC_HEX_LEN + 1, mac,
                   sizeof mac);
    sodium_memzero(mac, sizeof mac);
    return SHOAL_OK;
}
