/* The part of the consumer written in C++ (consumer_store.cpp). */
#ifndef CONSUMER_H
#define CONSUMER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Replaces `collection` in the store at `path` with `count` examples of 4
 * features and 2 classes. 0 on success, else -1 with a message in msg. */
int consumer_fill_store(const char *path, const char *collection, int count, char *msg,
                        size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif
