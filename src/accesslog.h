/* accesslog.h -- the log writer: a bounded queue of whole lines drained to stdout by one thread.
 * SPDX-License-Identifier: MIT
 *
 * Threading: lg_accesslog_write(), lg_accesslog_dropped() and lg_accesslog_set_format() may be
 * called from any thread at any time (before start and after stop too); lg_accesslog_start()
 * and lg_accesslog_stop() from the main thread only, never concurrently.
 *
 * Producers never wait for I/O: a line is copied into the queue under a short mutex and the
 * writer thread is woken. When the queue is full (max_lines lines or max_bytes bytes, counting
 * the batch being written), the line is dropped and lg_accesslog_dropped() moves. The writer
 * writes whole lines only, a batch of them per write(2), so lines never interleave or tear.
 *
 * While running, the writer is also the process log's sink (lg_log_set_sink), so messages
 * from lg_log() ("main", "config", ...) share the queue, in the same format as access lines:
 *   text: <time>\t<level>\t<scope>\t<message>
 *   json: {"level":"info","time":"<time>","scope":"<scope>","message":"<message>"} */
#ifndef LG_ACCESSLOG_H
#define LG_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define LG_ACCESSLOG_DEFAULT_LINES   10000
#define LG_ACCESSLOG_DEFAULT_BYTES   (16u * 1024 * 1024)
#define LG_ACCESSLOG_DEFAULT_STOP_MS 5000

typedef struct lg_accesslog_opts {
    int fd;                  /* where lines go; 0 means stdout (1). Not closed by stop(). */
    size_t max_lines;        /* queue capacity in lines; 0 means LG_ACCESSLOG_DEFAULT_LINES */
    size_t max_bytes;        /* queue capacity in bytes; 0 means LG_ACCESSLOG_DEFAULT_BYTES */
    int json;                /* process messages as JSON (see lg_accesslog_set_format) */
    int64_t stop_timeout_ms; /* how long stop() waits for a stuck reader; 0 means 5000 */
} lg_accesslog_opts_t;

/* Starts the writer thread and installs the process-log sink. `opts` is borrowed (copied);
 * NULL means all defaults. Returns LG_OK, or LG_ERR with `err` filled (already running, a
 * previous writer abandoned by stop() still alive, thread creation failed). */
int lg_accesslog_start(const lg_accesslog_opts_t *opts, lg_err_t *err);

/* Queues one line. `line` is borrowed (copied); it may end with '\n' or not -- exactly one
 * newline is written after it either way. Embedded '\n' bytes are written as spaces so one
 * call is always one line. Never blocks on I/O. Returns LG_OK when queued, LG_AGAIN when the
 * queue is full (the line is dropped and counted), LG_DECLINED when the writer is not running
 * (the line is discarded and not counted). */
int lg_accesslog_write(const char *line, size_t len);

/* Flushes every queued line, uninstalls the sink and joins the writer. If the reader of the
 * fd is stuck for longer than stop_timeout_ms, gives up: the lines still queued are counted
 * as dropped, the writer is left to exit on its own and LG_AGAIN is returned (a later start()
 * fails until it has). Returns LG_OK otherwise, also when the writer was not running. */
int lg_accesslog_stop(void);

/* Lines dropped since the process started (queue full, or write error such as EPIPE). */
uint64_t lg_accesslog_dropped(void);

/* Selects the format of process messages: 0 text, 1 JSON. Access lines are formatted in Lua
 * and written as they are. */
void lg_accesslog_set_format(int json);

#endif
