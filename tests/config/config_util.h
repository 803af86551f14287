/* Shared by the config tests: parsing a config text and the one-member-
 * per-line population layout whose positions the messages are checked
 * against. */
#ifndef SHOAL_TEST_CONFIG_UTIL_H
#define SHOAL_TEST_CONFIG_UTIL_H

#include "shoal/server_config.h"

/* The suite's temporary directory (the config's base directory). */
extern char dir[256];

/* Parses `text` as "shoal.json" in dir. */
shoal_err parse(const char *text, shoal_server_config **out, shoal_errinfo *ei);
/* Parses `text`, asserting that it is accepted. */
shoal_server_config *parse_ok(const char *text);
/* Asserts that `text` is refused with `want` and exactly `message`. */
void expect_error(const char *text, shoal_err want, const char *message);

/* One population laid out one member per line, so positions are easy to
 * read off: the values of name, auth and plan start at column 15, those of
 * model and round at column 16, on lines 4 to 8. */
#define CONFIG(NAME, AUTH, MODEL, PLAN, ROUND)                                                     \
    "{\n"                                                                                          \
    "  \"populations\": [\n"                                                                       \
    "    {\n"                                                                                      \
    "      \"name\": " NAME ",\n"                                                                  \
    "      \"auth\": " AUTH ",\n"                                                                  \
    "      \"model\": " MODEL ",\n"                                                                \
    "      \"plan\": " PLAN ",\n"                                                                  \
    "      \"round\": " ROUND "\n"                                                                 \
    "    }\n"                                                                                      \
    "  ]\n"                                                                                        \
    "}\n"

#define SECRET   "0123456789abcdef-secret"
#define NAME_OK  "\"fashion\""
#define AUTH_OK  "{\"mode\": \"shared\", \"secret\": \"" SECRET "\"}"
#define MODEL_OK "{\"architecture\": \"mlp\"}"
#define PLAN_OK  "{\"learning_rate\": 0.05}"
#define ROUND_OK "{\"goal_count\": 10}"
#endif
