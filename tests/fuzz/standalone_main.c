/* Corpus replayer for fuzz targets built without libFuzzer (fuzzing=none).
 *
 * Usage: <target> PATH...   Every regular file named, and every regular file
 * in (or below) every directory named, is read and passed once to
 * LLVMFuzzerTestOneInput, in name order. Prints "<target>: N inputs
 * replayed" and exits 0; exits 1 when a path cannot be read or no input was
 * found (a wrong corpus path must not pass as an empty success). A target
 * that aborts or crashes on an input takes the process down; the signal
 * handler names that input on stderr first, so `meson test` logs show which
 * corpus file to look at. Plays the role of libvips'
 * fuzz/StandaloneFuzzTargetMain.c. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *program = "fuzz";
/* The input being replayed, for the crash handler. */
static const char *volatile current_input;

static void write_str(const char *s)
{
    ssize_t unused = write(STDERR_FILENO, s, strlen(s));
    (void)unused;
}

static const int crash_signals[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
static struct sigaction previous[sizeof crash_signals / sizeof crash_signals[0]];

/* Names the input, then hands the signal to whoever handled it before (the
 * default action, or a sanitizer's reporter): a fault re-executes the
 * faulting instruction on return, and abort(3) raises SIGABRT again. Only
 * async-signal-safe calls. */
static void on_crash(int sig, siginfo_t *info, void *context)
{
    (void)context;
    const char *input = current_input;
    current_input = NULL;
    if (input) {
        write_str(program);
        write_str(": crashed on input ");
        write_str(input);
        write_str("\n");
    }
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
        if (crash_signals[i] == sig)
            sigaction(sig, &previous[i], NULL);
    if (info->si_code <= 0) /* sent by kill(2) or raise(3): nothing re-executes */
        raise(sig);
}

static void install_crash_handlers(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_crash;
    action.sa_flags = SA_SIGINFO;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
        sigaction(crash_signals[i], &action, &previous[i]);
}

static int replay_file(const char *path, size_t *replayed)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s: cannot open: %s\n", program, path, strerror(errno));
        return -1;
    }
    size_t cap = 4096, used = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fprintf(stderr, "%s: %s: out of memory\n", program, path);
            fclose(f);
            return -1;
        }
        used += fread(buf + used, 1, cap - used, f);
        if (used < cap)
            break;
        uint8_t *grown = realloc(buf, cap * 2);
        if (!grown)
            free(buf);
        buf = grown;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        fprintf(stderr, "%s: %s: read error\n", program, path);
        free(buf);
        return -1;
    }
    /* An exact-size copy, so ASan catches a read one past the input's end
     * as libFuzzer would. */
    uint8_t *input = malloc(used ? used : 1);
    if (!input) {
        fprintf(stderr, "%s: %s: out of memory\n", program, path);
        free(buf);
        return -1;
    }
    memcpy(input, buf, used);
    free(buf);
    current_input = path;
    (void)LLVMFuzzerTestOneInput(input, used);
    current_input = NULL;
    free(input);
    (*replayed)++;
    return 0;
}

static int skip_entry(const struct dirent *entry)
{
    /* ".", "..", and hidden files such as .gitkeep are not inputs. */
    return entry->d_name[0] != '.';
}

static int replay_path(const char *path, size_t *replayed)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: %s: %s\n", program, path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return replay_file(path, replayed);

    struct dirent **entries;
    int n = scandir(path, &entries, skip_entry, alphasort);
    if (n < 0) {
        fprintf(stderr, "%s: %s: cannot list: %s\n", program, path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(path) + 1 + strlen(entries[i]->d_name) + 1;
        char *child = malloc(len);
        if (!child) {
            fprintf(stderr, "%s: out of memory\n", program);
            rc = -1;
        } else {
            snprintf(child, len, "%s/%s", path, entries[i]->d_name);
            if (replay_path(child, replayed) != 0)
                rc = -1;
            free(child);
        }
        free(entries[i]);
    }
    free(entries);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 0 && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        program = slash ? slash + 1 : argv[0];
    }
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", program);
        return 2;
    }
    install_crash_handlers();

    size_t replayed = 0;
    int rc = 0;
    for (int i = 1; i < argc; i++)
        if (replay_path(argv[i], &replayed) != 0)
            rc = 1;
    if (replayed == 0) {
        fprintf(stderr, "%s: no inputs found in the paths given\n", program);
        rc = 1;
    }
    printf("%s: %zu inputs replayed\n", program, replayed);
    return rc;
}
