/* shoal_selfsigned_make (see shoal/selfsigned.h): the certificate a server
 * makes for itself on first run. POSIX file handling; mbedTLS for the key,
 * the certificate and its signature. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "shoal/alloc.h"
#include "shoal/selfsigned.h"

#if !defined(MBEDTLS_X509_CRT_WRITE_C) || !defined(MBEDTLS_PEM_WRITE_C) ||                         \
    !defined(MBEDTLS_PK_WRITE_C) || !defined(MBEDTLS_ECP_DP_SECP256R1_ENABLED) ||                  \
    !defined(MBEDTLS_SHA1_C)
#error "shoal_selfsigned_make needs mbedTLS with X.509 and PEM writing, P-256 and SHA-1"
#endif

#define SELFSIGNED_MAX_NAME 253
#define SELFSIGNED_MAX_DAYS 36500u
/* Backdating covers clocks of clients that run a little behind. */
#define SELFSIGNED_BACKDATE_SECONDS (5 * 60)
#define KEY_PEM_CAP                 1024
#define CERT_PEM_CAP                4096

static bool dns_name_plausible(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > SELFSIGNED_MAX_NAME || name[0] == '.' || name[0] == '-')
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '*';
        if (!ok)
            return false;
    }
    return true;
}

static void mbedtls_reason(int ret, char *buf, size_t cap)
{
    char text[160];
    mbedtls_strerror(ret, text, sizeof text);
    snprintf(buf, cap, "%s (-0x%04X)", text, (unsigned)-ret);
}

static shoal_err crypto_failure(shoal_errinfo *ei, const char *what, const char *dns_name, int ret)
{
    char reason[200];
    mbedtls_reason(ret, reason, sizeof reason);
    if (ret == MBEDTLS_ERR_PK_ALLOC_FAILED || ret == MBEDTLS_ERR_ECP_ALLOC_FAILED ||
        ret == MBEDTLS_ERR_MPI_ALLOC_FAILED || ret == MBEDTLS_ERR_X509_ALLOC_FAILED ||
        ret == MBEDTLS_ERR_ASN1_ALLOC_FAILED)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "self-signed certificate for %s: %s: %s",
                                 dns_name, what, reason);
    return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "self-signed certificate for %s: %s failed: %s",
                             dns_name, what, reason);
}

/* "YYYYMMDDhhmmss" in UTC, as mbedtls_x509write_crt_set_validity wants. */
static bool format_x509_time(time_t when, char out[15])
{
    struct tm tm;
    if (gmtime_r(&when, &tm) == NULL)
        return false;
    return strftime(out, 15, "%Y%m%d%H%M%S", &tm) == 14;
}

/* Wraps the `total` bytes written before p in a header (length, then
 * tag) and hands out where they start. asn1write fills a buffer from its
 * end. */
static int der_wrap(unsigned char *p, unsigned char *buf, size_t total, unsigned char tag,
                    unsigned char **start, size_t *len)
{
    int ret;
    if ((ret = mbedtls_asn1_write_len(&p, buf, total)) < 0)
        return ret;
    total += (size_t)ret;
    if ((ret = mbedtls_asn1_write_tag(&p, buf, tag)) < 0)
        return ret;
    *start = p;
    *len = total + (size_t)ret;
    return 0;
}

#define DER_SEQUENCE (MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)

/* subjectAltName (RFC 5280 §4.2.1.6): SEQUENCE { [2] IA5String dNSName }.
 * mbedTLS 2.28's x509write has no helper for it. */
static int der_subject_alt_name(const char *dns_name, unsigned char *buf, size_t cap,
                                unsigned char **start, size_t *len)
{
    unsigned char *p = buf + cap, *name;
    size_t n = strlen(dns_name), name_len;
    int ret = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)dns_name, n);
    if (ret < 0 ||
        (ret = der_wrap(p, buf, n, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2, &name, &name_len)) < 0)
        return ret;
    return der_wrap(name, buf, name_len, DER_SEQUENCE, start, len);
}

/* extKeyUsage (RFC 5280 §4.2.1.12): SEQUENCE { id-kp-serverAuth }, which
 * mbedTLS clients check on the server's certificate. */
static int der_ext_key_usage(unsigned char *buf, size_t cap, unsigned char **start, size_t *len)
{
    unsigned char *p = buf + cap;
    int ret = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
                                     MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH));
    return ret < 0 ? ret : der_wrap(p, buf, (size_t)ret, DER_SEQUENCE, start, len);
}

typedef struct pem_pair {
    unsigned char key[KEY_PEM_CAP];
    unsigned char cert[CERT_PEM_CAP];
} pem_pair;

static shoal_err make_pems(const char *dns_name, unsigned valid_days, pem_pair *out,
                           shoal_errinfo *ei)
{
    static const char personalization[] = "shoal self-signed certificate";
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    mbedtls_x509write_cert crt;
    mbedtls_mpi serial;
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    mbedtls_pk_init(&key);
    mbedtls_x509write_crt_init(&crt);
    mbedtls_mpi_init(&serial);

    shoal_err err = SHOAL_OK;
    char subject[SELFSIGNED_MAX_NAME + 4];
    unsigned char serial_bytes[16];
    unsigned char ext[SELFSIGNED_MAX_NAME + 32];
    unsigned char *ext_start;
    size_t ext_len;
    char not_before[15], not_after[15];
    int ret;

    ret = mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                (const unsigned char *)personalization, sizeof personalization - 1);
    if (ret != 0) {
        err = crypto_failure(ei, "seeding the random generator", dns_name, ret);
        goto done;
    }
    ret = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                                  mbedtls_ctr_drbg_random, &drbg);
    if (ret != 0) {
        err = crypto_failure(ei, "generating the P-256 key", dns_name, ret);
        goto done;
    }

    /* RFC 5280 §4.1.2.2: positive, at most 20 octets; random so that two
     * certificates a server made never share issuer and serial. The top
     * bits make it exactly 16 octets and never zero. */
    ret = mbedtls_ctr_drbg_random(&drbg, serial_bytes, sizeof serial_bytes);
    if (ret == 0) {
        serial_bytes[0] = (unsigned char)((serial_bytes[0] & 0x7F) | 0x40);
        ret = mbedtls_mpi_read_binary(&serial, serial_bytes, sizeof serial_bytes);
    }
    if (ret != 0) {
        err = crypto_failure(ei, "choosing a serial number", dns_name, ret);
        goto done;
    }

    time_t now = time(NULL);
    if (now == (time_t)-1 || !format_x509_time(now - SELFSIGNED_BACKDATE_SECONDS, not_before) ||
        !format_x509_time(now + (time_t)valid_days * 86400, not_after)) {
        err = shoal_errinfo_set(ei, SHOAL_EINVAL,
                                "self-signed certificate for %s: cannot express the validity "
                                "period (%u days from now) as a date; check the clock",
                                dns_name, valid_days);
        goto done;
    }

    snprintf(subject, sizeof subject, "CN=%s", dns_name);
    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, &key);
    const char *step = "setting the subject name";
    if ((ret = mbedtls_x509write_crt_set_subject_name(&crt, subject)) != 0)
        goto crypto_error;
    step = "setting the issuer name";
    if ((ret = mbedtls_x509write_crt_set_issuer_name(&crt, subject)) != 0)
        goto crypto_error;
    step = "setting the serial number";
    if ((ret = mbedtls_x509write_crt_set_serial(&crt, &serial)) != 0)
        goto crypto_error;
    step = "setting the validity period";
    if ((ret = mbedtls_x509write_crt_set_validity(&crt, not_before, not_after)) != 0)
        goto crypto_error;
    step = "adding basicConstraints";
    if ((ret = mbedtls_x509write_crt_set_basic_constraints(&crt, 1, 0)) != 0)
        goto crypto_error;
    step = "adding keyUsage";
    if ((ret = mbedtls_x509write_crt_set_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE |
                                                             MBEDTLS_X509_KU_KEY_CERT_SIGN)) != 0)
        goto crypto_error;
    step = "adding the key identifiers";
    if ((ret = mbedtls_x509write_crt_set_subject_key_identifier(&crt)) != 0 ||
        (ret = mbedtls_x509write_crt_set_authority_key_identifier(&crt)) != 0)
        goto crypto_error;
    step = "adding subjectAltName";
    if ((ret = der_subject_alt_name(dns_name, ext, sizeof ext, &ext_start, &ext_len)) != 0 ||
        (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                                                   MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME),
                                                   0, ext_start, ext_len)) != 0)
        goto crypto_error;
    step = "adding extKeyUsage";
    if ((ret = der_ext_key_usage(ext, sizeof ext, &ext_start, &ext_len)) != 0 ||
        (ret = mbedtls_x509write_crt_set_extension(&crt, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                                   MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
                                                   0, ext_start, ext_len)) != 0)
        goto crypto_error;
    step = "signing the certificate";
    if ((ret = mbedtls_x509write_crt_pem(&crt, out->cert, sizeof out->cert, mbedtls_ctr_drbg_random,
                                         &drbg)) != 0)
        goto crypto_error;
    step = "encoding the private key";
    if ((ret = mbedtls_pk_write_key_pem(&key, out->key, sizeof out->key)) != 0)
        goto crypto_error;
    goto done;

crypto_error:
    err = crypto_failure(ei, step, dns_name, ret);
done:
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&crt);
    mbedtls_pk_free(&key);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    mbedtls_platform_zeroize(serial_bytes, sizeof serial_bytes);
    return err;
}

static shoal_err refuse_existing(const char *path, const char *what, shoal_errinfo *ei)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "%s: a %s already exists; not overwriting it (use it, or move it "
                                 "away to generate a new one)",
                                 path, what);
    if (errno != ENOENT)
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot check the %s: %s", path, what,
                                 strerror(errno));
    return SHOAL_OK;
}

static bool write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Writes text to a fresh temporary file next to `path` (so linking it into
 * place stays within one file system), with `mode`, synced. *tmp_out gets
 * its name (caller frees). */
static shoal_err write_temp(const char *path, const char *what, const unsigned char *text,
                            mode_t mode, char **tmp_out, shoal_errinfo *ei)
{
    static const char suffix[] = ".tmp-XXXXXX";
    size_t path_len = strlen(path);
    char *tmp = shoal_malloc(path_len + sizeof suffix);
    if (tmp == NULL)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, path_len);
    memcpy(tmp + path_len, suffix, sizeof suffix);

    int fd = mkstemp(tmp); /* created with mode 0600 */
    if (fd < 0) {
        shoal_err err = shoal_errinfo_set(ei, SHOAL_EIO,
                                          "%s: cannot create the %s: %s; check that the "
                                          "directory exists and is writable",
                                          path, what, strerror(errno));
        shoal_free(tmp);
        return err;
    }
    int saved_errno = 0;
    if (fchmod(fd, mode) != 0 || !write_all(fd, text, strlen((const char *)text)) || fsync(fd) != 0)
        saved_errno = errno;
    if (close(fd) != 0 && saved_errno == 0)
        saved_errno = errno;
    if (saved_errno != 0) {
        unlink(tmp);
        shoal_free(tmp);
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot write the %s: %s", path, what,
                                 strerror(saved_errno));
    }
    *tmp_out = tmp;
    return SHOAL_OK;
}

/* Moves tmp to path unless path exists. link() fails with EEXIST instead of
 * replacing; file systems without hard links fall back to rename() after a
 * fresh existence check. tmp is removed either way. */
static shoal_err install(const char *tmp, const char *path, const char *what, shoal_errinfo *ei)
{
    shoal_err err = SHOAL_OK;
    if (link(tmp, path) == 0) {
        unlink(tmp);
        return SHOAL_OK;
    }
    int link_errno = errno;
    if (link_errno == EEXIST) {
        err = refuse_existing(path, what, ei);
        if (err == SHOAL_OK) /* gone again: report the race as it was */
            err = shoal_errinfo_set(ei, SHOAL_ESTATE, "%s: a %s appeared while writing it", path,
                                    what);
    } else if (link_errno == EPERM || link_errno == ENOSYS || link_errno == EOPNOTSUPP ||
               link_errno == EMLINK) {
        err = refuse_existing(path, what, ei);
        if (err == SHOAL_OK && rename(tmp, path) != 0)
            err = shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot install the %s: %s", path, what,
                                    strerror(errno));
    } else {
        err = shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot install the %s: %s", path, what,
                                strerror(link_errno));
    }
    unlink(tmp); /* no-op (ENOENT) after a successful rename */
    return err;
}

/* After the renames, sync the directory so the new names survive a crash. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (slash == NULL) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir)
            return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some file systems refuse it */
        close(fd);
    }
}

shoal_err shoal_selfsigned_make(const char *cert_path, const char *key_path, const char *dns_name,
                                unsigned valid_days, shoal_errinfo *ei)
{
    if (cert_path == NULL || cert_path[0] == '\0' || key_path == NULL || key_path[0] == '\0')
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "self-signed certificate: the certificate and key paths are "
                                 "required");
    if (strcmp(cert_path, key_path) == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "self-signed certificate: %s given for both the certificate "
                                 "and the key; use two files",
                                 cert_path);
    if (dns_name == NULL || !dns_name_plausible(dns_name))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "self-signed certificate: \"%s\" is not a DNS name (letters, "
                                 "digits, '-', '.', '*'; at most %d characters); use the name "
                                 "clients connect with, e.g. localhost",
                                 dns_name ? dns_name : "(null)", SELFSIGNED_MAX_NAME);
    if (valid_days == 0 || valid_days > SELFSIGNED_MAX_DAYS)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "self-signed certificate for %s: valid_days must be 1..%u, got "
                                 "%u",
                                 dns_name, SELFSIGNED_MAX_DAYS, valid_days);

    shoal_err err = refuse_existing(cert_path, "certificate", ei);
    if (err == SHOAL_OK)
        err = refuse_existing(key_path, "private key", ei);
    if (err != SHOAL_OK)
        return err;

    pem_pair *pems = shoal_calloc(1, sizeof *pems);
    if (pems == NULL)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "self-signed certificate for %s: out of memory",
                                 dns_name);
    char *key_tmp = NULL, *cert_tmp = NULL;
    err = make_pems(dns_name, valid_days, pems, ei);
    if (err == SHOAL_OK)
        err = write_temp(key_path, "private key", pems->key, 0600, &key_tmp, ei);
    if (err == SHOAL_OK)
        err = write_temp(cert_path, "certificate", pems->cert, 0644, &cert_tmp, ei);
    if (err == SHOAL_OK)
        err = install(key_tmp, key_path, "private key", ei);
    if (err == SHOAL_OK) {
        err = install(cert_tmp, cert_path, "certificate", ei);
        if (err != SHOAL_OK)
            unlink(key_path); /* ours: installed a moment ago */
    }
    if (err != SHOAL_OK) {
        if (key_tmp)
            unlink(key_tmp);
        if (cert_tmp)
            unlink(cert_tmp);
    } else {
        sync_parent_dir(key_path);
        sync_parent_dir(cert_path);
    }
    shoal_free(key_tmp);
    shoal_free(cert_tmp);
    mbedtls_platform_zeroize(pems, sizeof *pems);
    shoal_free(pems);
    return err;
}
