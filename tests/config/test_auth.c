/* Device authentication: shared secrets and per-device HMAC tokens, with
 * known-answer MACs computed independently (Python's hmac module). */
#include <criterion/criterion.h>
#include <string.h>

#include "shoal/auth.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define POP    "fashion-mnist"
/* hmac.new(SECRET, b"fashion-mnist\ndevice-42", sha256).hexdigest() */
#define MAC_42   "baf4ccb7759a99e1b0d991c5177c03b1ed8b55d3f6ca0743743539014dfefb31"
#define TOKEN_42 "v1.device-42." MAC_42

static const uint8_t *u8(const char *s)
{
    return (const uint8_t *)s;
}

static shoal_err check(shoal_auth_mode mode, const char *token, char *device, shoal_errinfo *ei)
{
    return shoal_auth_check(mode, u8(SECRET), strlen(SECRET), POP, u8(token), strlen(token), device,
                            ei);
}

static void expect_refused(shoal_auth_mode mode, const char *token, const char *message)
{
    char device[SHOAL_AUTH_DEVICE_ID_MAX + 1];
    memset(device, 'x', sizeof device);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(check(mode, token, device, &ei), SHOAL_EAUTH, "%s", token);
    cr_assert_str_eq(ei.msg, message);
    cr_assert_str_eq(device, "");
    /* Never the secret, nor any part of the token beyond its fixed prefix. */
    cr_assert_null(strstr(ei.msg, "0123456789abcdef"));
    cr_assert_null(strstr(ei.msg, "device-42"));
    cr_assert_null(strstr(ei.msg, "baf4cc"));
}

#define NOT_VALID "auth token for population 'fashion-mnist' is not valid"
#define MALFORMED "malformed token: expected v1.<device>.<mac>"

Test(auth_shared, equal_secret_is_accepted)
{
    char device[SHOAL_AUTH_DEVICE_ID_MAX + 1] = "stale";
    shoal_errinfo ei = {{0}};
    cr_assert_eq(check(SHOAL_AUTH_SHARED, SECRET, device, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(device, "");
    cr_assert_eq(check(SHOAL_AUTH_SHARED, SECRET, NULL, NULL), SHOAL_OK);
}

Test(auth_shared, different_secret_is_refused)
{
    expect_refused(SHOAL_AUTH_SHARED, "0123456789abcdef0123456789abcdeF", NOT_VALID);
    expect_refused(SHOAL_AUTH_SHARED, "X123456789abcdef0123456789abcdef", NOT_VALID);
}

Test(auth_shared, length_mismatch_is_refused)
{
    expect_refused(SHOAL_AUTH_SHARED, "0123456789abcdef0123456789abcde", NOT_VALID);
    expect_refused(SHOAL_AUTH_SHARED, SECRET "0", NOT_VALID);
    expect_refused(SHOAL_AUTH_SHARED, "", NOT_VALID);
}

Test(auth_shared, an_hmac_token_is_not_the_secret)
{
    expect_refused(SHOAL_AUTH_SHARED, TOKEN_42, NOT_VALID);
}

Test(auth_hmac, known_answer_token_is_accepted)
{
    char device[SHOAL_AUTH_DEVICE_ID_MAX + 1] = "";
    shoal_errinfo ei = {{0}};
    cr_assert_eq(check(SHOAL_AUTH_HMAC, TOKEN_42, device, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(device, "device-42");
}

Test(auth_hmac, mint_matches_the_known_answer)
{
    char token[SHOAL_AUTH_TOKEN_MAX];
    shoal_errinfo ei = {{0}};
    cr_assert_eq(
        shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, "device-42", token, sizeof token, &ei),
        SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(token, TOKEN_42);

    /* A 100-byte key (longer than the SHA-256 block: hashed first) and a
     * device id with every punctuation character allowed. */
    uint8_t long_key[100];
    memset(long_key, 'k', sizeof long_key);
    cr_assert_eq(
        shoal_auth_mint(long_key, sizeof long_key, "p", "A.b_c-9", token, sizeof token, NULL),
        SHOAL_OK);
    cr_assert_str_eq(token,
                     "v1.A.b_c-9.174a35c473c218606ae4da0418d0e0d552c381a041881659ae1fa4dc3b8e1db2");
}

Test(auth_hmac, mint_then_check_roundtrips)
{
    const char *devices[] = {"a", "phone-7", "x.y.z",
                             "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
        char token[SHOAL_AUTH_TOKEN_MAX], device[SHOAL_AUTH_DEVICE_ID_MAX + 1];
        shoal_errinfo ei = {{0}};
        cr_assert_eq(
            shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, devices[i], token, sizeof token, &ei),
            SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(strlen(token), 3 + strlen(devices[i]) + 1 + 64);
        cr_assert_eq(check(SHOAL_AUTH_HMAC, token, device, &ei), SHOAL_OK, "%s", ei.msg);
        cr_assert_str_eq(device, devices[i]);
    }
}

Test(auth_hmac, token_for_another_population_is_refused)
{
    char token[SHOAL_AUTH_TOKEN_MAX];
    cr_assert_eq(shoal_auth_mint(u8(SECRET), strlen(SECRET), "other", "device-42", token,
                                 sizeof token, NULL),
                 SHOAL_OK);
    expect_refused(SHOAL_AUTH_HMAC, token, NOT_VALID);
}

Test(auth_hmac, token_under_another_secret_is_refused)
{
    char token[SHOAL_AUTH_TOKEN_MAX];
    cr_assert_eq(
        shoal_auth_mint(u8("another-secret-0123"), 19, POP, "device-42", token, sizeof token, NULL),
        SHOAL_OK);
    expect_refused(SHOAL_AUTH_HMAC, token, NOT_VALID);
}

Test(auth_hmac, tampered_mac_or_device_is_refused)
{
    char token[] = TOKEN_42;
    /* Every position of the MAC, flipped to another lowercase hex digit. */
    const size_t mac_at = strlen("v1.device-42.");
    for (size_t i = mac_at; i < strlen(token); i++) {
        char saved = token[i];
        token[i] = saved == '0' ? '1' : '0';
        expect_refused(SHOAL_AUTH_HMAC, token, NOT_VALID);
        token[i] = saved;
    }
    /* Another device id with the MAC of device-42. */
    expect_refused(SHOAL_AUTH_HMAC, "v1.device-43." MAC_42, NOT_VALID);
    expect_refused(SHOAL_AUTH_HMAC, "v1.device-4." MAC_42, NOT_VALID);
}

Test(auth_hmac, malformed_tokens_are_refused)
{
    expect_refused(SHOAL_AUTH_HMAC, "", MALFORMED " (empty)");
    expect_refused(SHOAL_AUTH_HMAC, "nodots", MALFORMED " (too short)");
    expect_refused(SHOAL_AUTH_HMAC, "v2.device-42." MAC_42, MALFORMED " (no 'v1.' prefix)");
    expect_refused(SHOAL_AUTH_HMAC, "v1device-42x" MAC_42, MALFORMED " (no 'v1.' prefix)");
    expect_refused(SHOAL_AUTH_HMAC, "v1.device-42x" MAC_42,
                   MALFORMED " (no '.' before the 64-digit MAC)");
    expect_refused(SHOAL_AUTH_HMAC, "v1.." MAC_42, MALFORMED " (too short)");
    expect_refused(SHOAL_AUTH_HMAC, "v1.x." MAC_42 "0",
                   MALFORMED " (no '.' before the 64-digit MAC)");
    /* Bad hex: upper case, a non-hex letter, a short MAC. */
    expect_refused(SHOAL_AUTH_HMAC,
                   "v1.device-42.BAF4CCB7759A99E1B0D991C5177C03B1ED8B55D3F6CA0743743539014DFEFB31",
                   MALFORMED " (the MAC must be 64 lowercase hex digits)");
    expect_refused(SHOAL_AUTH_HMAC,
                   "v1.device-42.baf4ccb7759a99e1b0d991c5177c03b1ed8b55d3f6ca0743743539014dfefb3g",
                   MALFORMED " (the MAC must be 64 lowercase hex digits)");
    expect_refused(SHOAL_AUTH_HMAC,
                   "v1.device-42.baf4ccb7759a99e1b0d991c5177c03b1ed8b55d3f6ca0743743539014dfefb3",
                   MALFORMED " (no '.' before the 64-digit MAC)");
    /* Bad device id characters. */
    expect_refused(SHOAL_AUTH_HMAC, "v1.dev ice." MAC_42,
                   MALFORMED " (the device id must be 1 to 64 characters of [A-Za-z0-9._-])");
    expect_refused(SHOAL_AUTH_HMAC, "v1.dev/ice." MAC_42,
                   MALFORMED " (the device id must be 1 to 64 characters of [A-Za-z0-9._-])");
    expect_refused(SHOAL_AUTH_HMAC, "v1.d\xc3\xa9vice." MAC_42,
                   MALFORMED " (the device id must be 1 to 64 characters of [A-Za-z0-9._-])");
    /* A 65-character device id: too long for any valid token. */
    expect_refused(SHOAL_AUTH_HMAC,
                   "v1.01234567890123456789012345678901234567890123456789012345678901234." MAC_42,
                   MALFORMED " (too long)");
}

Test(auth_hmac, token_with_nul_byte_is_refused)
{
    const char raw[] = "v1.dev\0ce." MAC_42;
    char device[SHOAL_AUTH_DEVICE_ID_MAX + 1];
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_auth_check(SHOAL_AUTH_HMAC, u8(SECRET), strlen(SECRET), POP, u8(raw),
                                  sizeof raw - 1, device, &ei),
                 SHOAL_EAUTH);
    cr_assert_str_eq(ei.msg,
                     MALFORMED " (the device id must be 1 to 64 characters of [A-Za-z0-9._-])");
}

Test(auth, population_name_is_quoted_safely)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_auth_check(SHOAL_AUTH_SHARED, u8(SECRET), strlen(SECRET), "a\nb", u8("nope"),
                                  4, NULL, &ei),
                 SHOAL_EAUTH);
    cr_assert_str_eq(ei.msg, "auth token for population 'a?b' is not valid");
}

Test(auth, bad_arguments_are_einval)
{
    char device[SHOAL_AUTH_DEVICE_ID_MAX + 1];
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_auth_check(SHOAL_AUTH_SHARED, NULL, 4, POP, u8("abcd"), 4, device, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(shoal_auth_check(SHOAL_AUTH_SHARED, u8(SECRET), 0, POP, u8(""), 0, device, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(
        shoal_auth_check(SHOAL_AUTH_SHARED, u8(SECRET), 4, NULL, u8("0123"), 4, device, &ei),
        SHOAL_EINVAL);
    cr_assert_eq(shoal_auth_check(SHOAL_AUTH_SHARED, u8(SECRET), 4, POP, NULL, 4, device, &ei),
                 SHOAL_EINVAL);
    cr_assert_eq(
        shoal_auth_check((shoal_auth_mode)7, u8(SECRET), 4, POP, u8("0123"), 4, device, &ei),
        SHOAL_EINVAL);
    cr_assert_str_eq(device, "");
}

Test(auth, mint_refuses_bad_device_ids_and_small_buffers)
{
    char token[SHOAL_AUTH_TOKEN_MAX];
    shoal_errinfo ei = {{0}};
    const char *bad[] = {"", "has space", "slash/",
                         "01234567890123456789012345678901234567890123456789012345678901234"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(token, 'x', sizeof token);
        cr_assert_eq(
            shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, bad[i], token, sizeof token, &ei),
            SHOAL_EINVAL, "%s", bad[i]);
        cr_assert_str_eq(ei.msg, "device id must be 1 to 64 characters of [A-Za-z0-9._-]");
        cr_assert_str_eq(token, "");
    }
    const size_t need = strlen(TOKEN_42) + 1;
    cr_assert_eq(
        shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, "device-42", token, need - 1, &ei),
        SHOAL_EINVAL);
    cr_assert_str_eq(ei.msg, "auth mint: the token needs 78 bytes, got 77");
    cr_assert_eq(shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, "device-42", token, need, &ei),
                 SHOAL_OK);
    cr_assert_str_eq(token, TOKEN_42);
    cr_assert_eq(shoal_auth_mint(NULL, 4, POP, "d", token, sizeof token, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_auth_mint(u8(SECRET), 0, POP, "d", token, sizeof token, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_auth_mint(u8(SECRET), 4, NULL, "d", token, sizeof token, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_auth_mint(u8(SECRET), 4, POP, "d", NULL, 10, &ei), SHOAL_EINVAL);
}

Test(auth, token_max_fits_the_longest_token)
{
    char token[SHOAL_AUTH_TOKEN_MAX];
    const char *longest = "0123456789012345678901234567890123456789012345678901234567890123";
    cr_assert_eq(
        shoal_auth_mint(u8(SECRET), strlen(SECRET), POP, longest, token, sizeof token, NULL),
        SHOAL_OK);
    cr_assert_eq(strlen(token) + 1, (size_t)SHOAL_AUTH_TOKEN_MAX);
}
