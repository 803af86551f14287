/* UTF-8 validation for text messages and close reasons (RFC 6455 §8.1:
 * invalid UTF-8 in a text message fails the connection with 1007). The byte
 * ranges are those of the Unicode Standard, Table 3-7. */
#include "ws_int.h"

void shoal_ws_utf8_init(shoal_ws_utf8 *u)
{
    u->need = 0;
    u->lo = 0x80;
    u->hi = 0xBF;
}

size_t shoal_ws_utf8_feed(shoal_ws_utf8 *u, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        const uint8_t b = p[i];
        if (u->need > 0) {
            if (b < u->lo || b > u->hi)
                return i;
            u->need--;
            u->lo = 0x80;
            u->hi = 0xBF;
            continue;
        }
        if (b < 0x80)
            continue;
        if (b >= 0xC2 && b <= 0xDF) {
            u->need = 1;
        } else if (b == 0xE0) {
            u->need = 2;
            u->lo = 0xA0; /* no overlong 3-byte forms */
        } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
            u->need = 2;
        } else if (b == 0xED) {
            u->need = 2;
            u->hi = 0x9F; /* no surrogates */
        } else if (b == 0xF0) {
            u->need = 3;
            u->lo = 0x90; /* no overlong 4-byte forms */
        } else if (b >= 0xF1 && b <= 0xF3) {
            u->need = 3;
        } else if (b == 0xF4) {
            u->need = 3;
            u->hi = 0x8F; /* nothing above U+10FFFF */
        } else {
            return i;
        }
    }
    return len;
}

bool shoal_ws_utf8_complete(const shoal_ws_utf8 *u)
{
    return u->need == 0;
}

bool shoal_ws_utf8_valid(const uint8_t *p, size_t len, size_t *bad_at)
{
    shoal_ws_utf8 u;
    shoal_ws_utf8_init(&u);
    size_t at = shoal_ws_utf8_feed(&u, p, len);
    if (at == len && shoal_ws_utf8_complete(&u))
        return true;
    if (bad_at)
        *bad_at = at;
    return false;
}
