#include "json_locate_int.h"

#include <stdint.h>
#include <string.h>

typedef struct scanner {
    const unsigned char *s;
    size_t len, i;
    long line;
    long chars; /* characters consumed on the current line */
} scanner;

static json_pos here(const scanner *sc)
{
    json_pos p = {sc->line, sc->chars + 1};
    return p;
}

static int at_end(const scanner *sc)
{
    return sc->i >= sc->len;
}

static int peek(const scanner *sc)
{
    return at_end(sc) ? -1 : sc->s[sc->i];
}

static void advance(scanner *sc)
{
    if (at_end(sc))
        return;
    unsigned char b = sc->s[sc->i++];
    if (b == '\n') {
        sc->line++;
        sc->chars = 0;
    } else if ((b & 0xC0) != 0x80) { /* continuation bytes belong to the character before */
        sc->chars++;
    }
}

static void skip_ws(scanner *sc)
{
    for (int c = peek(sc); c == ' ' || c == '\t' || c == '\n' || c == '\r'; c = peek(sc))
        advance(sc);
}

/* Past a string whose opening quote is at the cursor. */
static void skip_string(scanner *sc)
{
    advance(sc);
    while (!at_end(sc)) {
        int c = peek(sc);
        advance(sc);
        if (c == '"')
            return;
        if (c == '\\')
            advance(sc);
    }
}

/* Past one value of any kind. */
static void skip_value(scanner *sc)
{
    int c = peek(sc);
    if (c == '"') {
        skip_string(sc);
        return;
    }
    if (c == '{' || c == '[') {
        size_t depth = 0;
        while (!at_end(sc)) {
            c = peek(sc);
            if (c == '"') {
                skip_string(sc);
                continue;
            }
            advance(sc);
            if (c == '{' || c == '[')
                depth++;
            else if ((c == '}' || c == ']') && --depth == 0)
                return;
        }
        return;
    }
    /* A number or literal: up to the next delimiter. */
    for (c = peek(sc); c >= 0 && c != ',' && c != '}' && c != ']' && c != ' ' && c != '\t' &&
                       c != '\n' && c != '\r';
         c = peek(sc))
        advance(sc);
}

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char h = p[k];
        v <<= 4;
        if (h >= '0' && h <= '9')
            v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f')
            v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            v |= (uint32_t)(h - 'A' + 10);
        else
            return 0;
    }
    *out = v;
    return 1;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads the string at the cursor (opening quote) and says whether it
 * unescapes to `want`, as jansson would decode it ("\u0067oal" is "goal").
 * Leaves the cursor after the closing quote either way. */
static int string_equals(scanner *sc, const char *want)
{
    const unsigned char *w = (const unsigned char *)want;
    size_t wi = 0;
    int same = 1;
    advance(sc);
    while (!at_end(sc)) {
        int c = peek(sc);
        if (c == '"') {
            advance(sc);
            return same && w[wi] == 0;
        }
        unsigned char bytes[4];
        size_t n = 1;
        bytes[0] = (unsigned char)c;
        advance(sc);
        if (c == '\\' && !at_end(sc)) {
            int e = peek(sc);
            advance(sc);
            /* The one-letter escapes and the bytes they stand for; any
             * other letter (\" \\ \/) stands for itself. */
            static const char letters[] = "bfnrt", stands_for[] = "\b\f\n\r\t";
            const char *letter = e ? strchr(letters, e) : NULL;
            if (letter) {
                bytes[0] = (unsigned char)stands_for[letter - letters];
            } else if (e == 'u') {
                uint32_t cp;
                if (sc->len - sc->i < 4 || !hex4(sc->s + sc->i, &cp))
                    return 0;
                for (int k = 0; k < 4; k++)
                    advance(sc);
                /* A high surrogate followed by "\uDC00".."\uDFFF" is one code point. */
                if (cp >= 0xD800 && cp <= 0xDBFF && sc->len - sc->i >= 6 && sc->s[sc->i] == '\\' &&
                    sc->s[sc->i + 1] == 'u') {
                    uint32_t low;
                    if (hex4(sc->s + sc->i + 2, &low) && low >= 0xDC00 && low <= 0xDFFF) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                        for (int k = 0; k < 6; k++)
                            advance(sc);
                    }
                }
                n = utf8_encode(cp, bytes);
            } else {
                bytes[0] = (unsigned char)e;
            }
        }
        for (size_t k = 0; k < n && same; k++) {
            if (w[wi] != bytes[k])
                same = 0;
            else
                wi++;
        }
    }
    return 0;
}

/* Skips the value under the scanner and the comma after it; 0 when no
 * comma follows (the end of the object or array, or not JSON). */
static int skip_to_next(scanner *sc)
{
    skip_value(sc);
    skip_ws(sc);
    if (peek(sc) != ',')
        return 0;
    advance(sc);
    return 1;
}

size_t shoal_json_locate(const char *text, size_t len, const json_step *path, size_t count,
                         json_pos *value, json_pos *key)
{
    scanner sc = {(const unsigned char *)text, text ? len : 0, 0, 1, 0};
    skip_ws(&sc);
    json_pos at = here(&sc), key_at = at;
    size_t found = 0;
    for (; found < count; found++) {
        const json_step *step = &path[found];
        int hit = 0;
        if (step->key) {
            if (peek(&sc) != '{')
                break;
            advance(&sc);
            for (;;) {
                skip_ws(&sc);
                if (peek(&sc) != '"')
                    break; /* '}' (not there) or not JSON */
                json_pos k = here(&sc);
                int match = string_equals(&sc, step->key);
                skip_ws(&sc);
                if (peek(&sc) != ':')
                    break;
                advance(&sc);
                skip_ws(&sc);
                if (match) {
                    key_at = k;
                    hit = 1;
                    break;
                }
                if (!skip_to_next(&sc))
                    break;
            }
        } else {
            if (peek(&sc) != '[')
                break;
            advance(&sc);
            for (size_t i = 0;; i++) {
                skip_ws(&sc);
                if (at_end(&sc) || peek(&sc) == ']')
                    break;
                if (i == step->index) {
                    key_at = here(&sc);
                    hit = 1;
                    break;
                }
                if (!skip_to_next(&sc))
                    break;
            }
        }
        if (!hit)
            break;
        at = here(&sc);
        if (!step->key)
            key_at = at;
    }
    if (value)
        *value = at;
    if (key)
        *key = key_at;
    return found;
}
