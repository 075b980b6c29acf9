/* test_trace.c -- ids, traceparent parse/format, tracestate, sampling decisions.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/trace.c"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static int parses(const char *s)
{
    lg_traceparent_t tp;
    return lg_traceparent_parse(s, strlen(s), &tp) == LG_OK;
}

static void *thread_ids(void *arg)
{
    lg_span_id_new(arg);
    return NULL;
}

int main(void)
{
    lg_traceparent_t tp, tp2;
    char buf[LG_TRACEPARENT_LEN + 1], hex[33];
    const char *valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /* ---- parse ---- */
    ok(lg_traceparent_parse(valid, strlen(valid), &tp) == LG_OK, "valid traceparent parses");
    lg_trace_hex(tp.trace_id, 16, hex);
    ok_streq(hex, "4bf92f3577b34da6a3ce929d0e0e4736", "trace id");
    lg_trace_hex(tp.span_id, 8, hex);
    ok_streq(hex, "00f067aa0ba902b7", "parent id");
    ok(tp.flags == 0x01, "flags 01");
    ok(parses("  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t"),
       "surrounding whitespace ignored");
    ok(parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"), "flags 03 accepted");
    ok(lg_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", 55, &tp) ==
               LG_OK &&
           tp.flags == 0xff,
       "any flags value accepted, kept for masking");
    ok(!parses("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version ff invalid");
    ok(!parses("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace id invalid");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
       "zero parent id invalid");
    ok(!parses("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "uppercase hex invalid");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"), "non-hex invalid");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"), "short parent id");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01"), "misplaced dash");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"), "one-digit flags");
    ok(!parses("0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "one-digit version");
    ok(!parses("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
       "version 00 with extra fields invalid");
    ok(!parses("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"), "wrong separators");
    ok(!parses(""), "empty invalid");
    ok(lg_traceparent_parse(NULL, 0, &tp) == LG_ERR, "NULL invalid");
    ok(parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"),
       "future version with extra fields parses");
    ok(parses("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
       "future version, exact length, parses");
    ok(!parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
       "future version: flags must be followed by '-' or end");
    ok(!parses("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"),
       "future version shorter than 55 invalid");

    /* ---- format ---- */
    lg_traceparent_parse(valid, strlen(valid), &tp);
    ok(lg_traceparent_format(&tp, buf) == 55 && strcmp(buf, valid) == 0, "format round trip");
    lg_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 57, &tp);
    lg_traceparent_format(&tp, buf);
    ok_streq(buf, valid, "a future version is re-serialized as 00");
    lg_trace_id_new(tp.trace_id);
    lg_span_id_new(tp.span_id);
    tp.flags = 0;
    lg_traceparent_format(&tp, buf);
    ok(lg_traceparent_parse(buf, strlen(buf), &tp2) == LG_OK && memcmp(&tp, &tp2, sizeof(tp)) == 0,
       "generated ids round trip: %s", buf);

    /* ---- ids ---- */
    {
        uint8_t a[16], b[16], s1[8] = {0}, s2[8] = {0};
        pthread_t t1, t2;
        lg_trace_id_new(a);
        lg_trace_id_new(b);
        ok(!lg_trace_id_is_zero(a, 16) && memcmp(a, b, 16) != 0, "trace ids non-zero, distinct");
        pthread_create(&t1, NULL, thread_ids, s1);
        pthread_create(&t2, NULL, thread_ids, s2);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        ok(!lg_trace_id_is_zero(s1, 8) && memcmp(s1, s2, 8) != 0,
           "threads get independent generators");
        double u = lg_trace_random_unit();
        ok(u >= 0.0 && u < 1.0, "unit draw in [0,1)");
        uint8_t x[3];
        ok(lg_trace_unhex("0aFf", 2, x) == LG_ERR && lg_trace_unhex("0aff", 2, x) == LG_OK &&
               x[0] == 0x0a && x[1] == 0xff,
           "unhex rejects uppercase, accepts lowercase");
    }

    /* ---- tracestate ---- */
    ok(lg_tracestate_ok("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 38), "tracestate ok");
    ok(lg_tracestate_ok("", 0), "empty tracestate ok");
    ok(lg_tracestate_ok("a=1 ,\tb=2", 9), "optional whitespace ok");
    ok(!lg_tracestate_ok("a=1\r\nx: y", 10), "control characters rejected");
    {
        char many[200];
        size_t n = 0;
        for (int i = 0; i < 33; i++)
            n += (size_t)snprintf(many + n, sizeof(many) - n, "%sk=v", i ? "," : "");
        ok(!lg_tracestate_ok(many, n), "more than 32 members rejected");
    }

    /* ---- sampling ---- */
    {
        lg_traceparent_t sampled = tp, unsampled = tp;
        int hits = 0, n = 20000;
        sampled.flags = 0x01;
        unsampled.flags = 0x00;
        ok(lg_trace_sample(NULL, 1.0, 1.0) == 1, "no parent, randomSampling true: sampled");
        ok(lg_trace_sample(NULL, 1.0, 0.0) == 0, "no parent, randomSampling false: not sampled");
        ok(lg_trace_sample(&sampled, 1.0, 0.0) == 1, "sampled parent, clientSampling: sampled");
        ok(lg_trace_sample(&unsampled, 1.0, 1.0) == 0,
           "unsampled parent stays unsampled under clientSampling");
        sampled.flags = 0x03;
        ok(lg_trace_sample(&sampled, 1.0, 0.0) == 1, "flags 03 masked: sampled");
        sampled.flags = 0x02;
        ok(lg_trace_sample(&sampled, 1.0, 1.0) == 0, "flags 02 masked: not sampled");
        sampled.flags = 0x01;
        ok(lg_trace_sample(&sampled, 0.0, 0.0) == 0,
           "clientSampling false ignores a sampled parent (randomSampling false)");
        ok(lg_trace_sample(&unsampled, 0.0, 1.0) == 1,
           "clientSampling false ignores an unsampled parent (randomSampling true)");
        for (int i = 0; i < n; i++)
            hits += lg_trace_sample(NULL, 1.0, 0.25);
        ok(hits > n * 0.22 && hits < n * 0.28, "randomSampling 0.25 samples ~25%% (%d/%d)", hits,
           n);
        hits = 0;
        for (int i = 0; i < n; i++)
            hits += lg_trace_sample(&sampled, 0.5, 0.0);
        ok(hits > n * 0.45 && hits < n * 0.55, "clientSampling 0.5 honours parent ~50%% (%d/%d)",
           hits, n);
        ok(lg_trace_sample(NULL, 1.0, 0.0 / 0.0) == 0, "NaN probability never samples");
        ok(lg_trace_sample(NULL, 1.0, 7.0) == 1, "probability above 1 always samples");
    }

    /* ---- zero ids: any single non-zero byte counts, at every position and length ---- */
    {
        uint8_t id[16];
        int good = 1;
        for (size_t n = 0; n <= 16; n++) {
            memset(id, 0, sizeof(id));
            good &= lg_trace_id_is_zero(id, n);
            for (size_t i = 0; i < n; i++) {
                memset(id, 0, sizeof(id));
                id[i] = 0x10;
                good &= !lg_trace_id_is_zero(id, n);
            }
        }
        ok(good, "lg_trace_id_is_zero: all zero is zero; one set byte anywhere is not");
    }

    /* ---- hex of every byte value ---- */
    {
        uint8_t all[256];
        char got[513], want[513];
        for (int i = 0; i < 256; i++) {
            all[i] = (uint8_t)i;
            snprintf(want + 2 * i, 3, "%02x", i);
        }
        ok(lg_trace_hex(all, 256, got) == 512 && strcmp(got, want) == 0,
           "lg_trace_hex writes two lowercase digits per byte, all 256 values");
    }

    /* ---- a forked child does not repeat its parent's ids ---- */
    {
        uint8_t before[LG_TRACE_ID_LEN], mine[LG_TRACE_ID_LEN], theirs[LG_TRACE_ID_LEN];
        lg_trace_id_new(before); /* the parent's generator is seeded before the fork */
        int fds[2];
        if (pipe(fds) == 0) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                lg_trace_id_new(theirs);
                ssize_t w = write(fds[1], theirs, sizeof(theirs));
                _exit(w == (ssize_t)sizeof(theirs) ? 0 : 1);
            }
            lg_trace_id_new(mine);
            ssize_t got = read(fds[0], theirs, sizeof(theirs));
            int status = 0;
            waitpid(pid, &status, 0);
            close(fds[0]);
            close(fds[1]);
            ok(pid > 0 && got == (ssize_t)sizeof(theirs) && memcmp(mine, theirs, sizeof(mine)) != 0,
               "after fork, the child's next trace id differs from the parent's");
        } else {
            ok(0, "pipe for the fork check");
        }
    }
    return test_done();
}
