/* Shoal: the self-signed certificate a server makes for itself.
 *
 * On first start without a certificate, shoal-server creates a key and a
 * self-signed certificate for "localhost" with shoal_selfsigned_make, so a
 * test or demonstration deployment runs over TLS without a CA; devices
 * then pin that certificate (shoal/tls.h). Tests make their certificates
 * the same way. Server side and POSIX only: the device SDK never links it.
 *
 * The key and the certificate come from mbedTLS; the files are written
 * with POSIX calls. */
#ifndef SHOAL_SELFSIGNED_H
#define SHOAL_SELFSIGNED_H

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates an EC P-256 key and a self-signed X.509 v3 certificate for
 * dns_name (subject CN and subjectAltName DNS entry; basicConstraints
 * CA:true so the certificate is its own trust anchor; random serial; valid
 * from five minutes before the call until valid_days x 86400 seconds after
 * it, in UTC; signed with ECDSA-SHA256) and
 * writes them as PEM: the key to key_path with mode 0600, the certificate
 * to cert_path. Each file is written to a temporary file in the same
 * directory, synced, and linked into place only if that name is still
 * free, so a reader never sees a partial file and an existing file is
 * never replaced. Randomness comes from mbedTLS's default entropy sources.
 *   SHOAL_ESTATE   cert_path or key_path already exists (nothing written);
 *   SHOAL_EINVAL   a NULL or empty argument, a dns_name that is not a
 *                  plausible DNS name (letters, digits, '-', '.', '*'; at
 *                  most 253 characters), valid_days 0 or above 36500, or
 *                  both paths equal;
 *   SHOAL_EIO      a file could not be written (ei names it and errno);
 *   SHOAL_ECRYPTO, SHOAL_ENOMEM.
 * On error nothing is left behind. Thread-safe. POSIX only. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_selfsigned_make(const char *cert_path,
                                                          const char *key_path,
                                                          const char *dns_name, unsigned valid_days,
                                                          shoal_errinfo *ei);

#ifdef __cplusplus
}
#endif

#endif
