#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "shoal/log.h"

struct captured {
    int calls;
    shoal_log_level level;
    char component[32];
    char line[256];
};

static void capture(void *ctx, shoal_log_level level, const char *component, const char *line)
{
    struct captured *c = ctx;
    c->calls++;
    c->level = level;
    snprintf(c->component, sizeof c->component, "%s", component);
    snprintf(c->line, sizeof c->line, "%s", line);
}

static int formatted;

static const char *count_formatting(void)
{
    formatted++;
    return "x";
}

Test(common_log, sink_receives_formatted_line_with_level_and_component)
{
    struct captured c = {0};
    shoal_log_set_sink(capture, &c);
    shoal_log_set_level(SHOAL_LOG_INFO);
    SHOAL_WARN("round", "round %d abandoned: %s", 7, "too few reports");
    shoal_log_set_sink(NULL, NULL);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(c.level, SHOAL_LOG_WARN);
    cr_assert_str_eq(c.component, "round");
    cr_assert_str_eq(c.line, "round 7 abandoned: too few reports");
}

Test(common_log, messages_above_the_level_are_not_even_formatted)
{
    struct captured c = {0};
    shoal_log_set_sink(capture, &c);
    shoal_log_set_level(SHOAL_LOG_WARN);
    formatted = 0;
    SHOAL_DEBUG("x", "%s", count_formatting());
    SHOAL_INFO("x", "%s", count_formatting());
    shoal_log_set_sink(NULL, NULL);
    cr_assert_eq(formatted, 0);
    cr_assert_eq(c.calls, 0);
}

Test(common_log, level_names_parse_and_unknown_names_fail)
{
    shoal_log_level l;
    cr_assert_eq(shoal_log_level_parse("debug", &l), SHOAL_OK);
    cr_assert_eq(l, SHOAL_LOG_DEBUG);
    cr_assert_eq(shoal_log_level_parse("error", &l), SHOAL_OK);
    cr_assert_eq(l, SHOAL_LOG_ERROR);
    cr_assert_eq(shoal_log_level_parse("verbose", &l), SHOAL_EINVAL);
    cr_assert_eq(shoal_log_level_parse(NULL, &l), SHOAL_EINVAL);
}

Test(common_log, long_lines_are_truncated_not_overflowed)
{
    struct captured c = {0};
    char big[4000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    shoal_log_set_sink(capture, &c);
    shoal_log_set_level(SHOAL_LOG_ERROR);
    SHOAL_ERROR("x", "%s", big);
    shoal_log_set_sink(NULL, NULL);
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(strlen(c.line), sizeof c.line - 1);
}
